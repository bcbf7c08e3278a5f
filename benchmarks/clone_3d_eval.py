"""Camera cloning in the rendered world with depth: the measure's validation, then the models.

  python benchmarks/clone_3d_eval.py --records DATA/val/records --clips 32 \
      --model WORKDIR/export --no_camera NOCAM/export [--out result.json] [--strip strip.png]

DATA is the run's data.synthetic_dir (default WORKDIR/data of a configs/clone_3d.py run); its
held-out split (val/records) has unseen locations and trajectories. For each task (I2V, V2V)
the table has: the ground truth (the camera measure read on the true targets: its validation,
>= 90% read and <= 1 deg/frame mean asked), a static camera (the first frame copied), the
first frame moved by the true camera (what reading the camera alone gives), each --model with
its camera reference and with it zeroed (and, with --copy, with the target itself as its
camera reference: whether its sampler draws coherent frames when the answer is given), and
each --no_camera model (trained with a zero camera reference). Every sample comes from
CamClonePipeline.generate, the sampler of `python -m camclone_jax.sample`; V2V gets the content video and, as the release's first_frame_path, the
target's first frame. --validate_only scores those three rows alone (no model). Also printed
(and in --out as "world"): how much of each latent frame the first frame already showed, and
how far the image moves between latent frames. Scores: camclone_jax/eval/clone_3d.py.
"""
import argparse
import dataclasses
import json
import os
import time

import numpy as np
from PIL import Image

from camclone_jax.eval import clone as clone_eval
from camclone_jax.eval import clone_3d
from camclone_jax.inference import clone as clone_lib
from camclone_jax.inference.pipeline import CamClonePipeline


CASE_LABELS = {"zeroed": "camera reference zeroed", "copy": "target as camera reference"}


def named(spec: str) -> tuple[str, str]:
    """'NAME=DIR' or 'DIR' -> (name, dir)."""
    name, _, path = spec.rpartition("=")
    return (name or os.path.basename(os.path.dirname(os.path.abspath(path))) or path), path


def run(args) -> dict:
    """Scores everything; returns {"rows", "args", "seconds"}."""
    start = time.time()
    clips = clone_3d.held_out_clips(args.records, args.clips)
    world = view_summary(clips)
    print(json.dumps({"world": world}), flush=True)
    models = {n: CamClonePipeline.from_checkpoint(p) for n, p in map(named, args.model)}
    nocam = {n: CamClonePipeline.from_checkpoint(p) for n, p in map(named, args.no_camera)}
    cases = ("given", "zeroed") + (("copy",) if args.copy else ())
    copies = [dataclasses.replace(c, camera_ref=c.target) for c in clips]  # ref = target
    rows, videos = [], {}
    for task in args.tasks.split(","):
        rows += clone_3d.reference_rows(clips, task)
        for r in rows[-3:]:
            print(json.dumps({k: v for k, v in r.items() if k != "per_clip"}), flush=True)
        for name, pipe in list(models.items()) + list(nocam.items()):
            for case in (cases if name in models else ("zeroed",)):
                vids = clone_lib.generate_all(pipe, copies if case == "copy" else clips, task,
                                              steps=args.steps, no_camera=case == "zeroed")
                label = (name if case == "given" or name not in models
                         else f"{name}, {CASE_LABELS[case]}")
                videos[(task, label)] = vids
                rows.append({"row": label, "task": task,
                             **clone_3d.score_videos(vids, clips)})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_clip"}),
                      flush=True)
    if args.strip and models:
        write_strip(args.strip, clips, videos, next(iter(models)), args.strip_clips)
    return {"rows": rows, "world": world, "clips": [c.describe for c in clips], "args": vars(args),
            "seconds": round(time.time() - start, 1)}


def view_summary(clips) -> dict:
    """The held-out targets' view travel (eval.clone_3d.view_overlap), averaged over clips:
    the fraction of each latent frame already in the first frame's view, and the image motion
    between latent frames in pixels (mean, median, max)."""
    views = [clone_3d.view_overlap(c) for c in clips]
    motion = np.concatenate([v["motion_px"] for v in views])  # [clips (f-1)]
    return {"in_first_view": np.mean([v["in_first_view"] for v in views], 0).round(3).tolist(),
            "motion_px": {"mean": round(float(motion.mean()), 2),
                          "median": round(float(np.median(motion)), 2),
                          "max": round(float(motion.max()), 2)}}


def write_strip(path: str, clips, videos: dict, model: str, count: int):
    """A picture: for the first ``count`` clips, I2V, rows of latent frames of camera ref |
    result | truth, 4x upscaled (label bands from ``inference.clone.label_strip``)."""
    rows = []
    for i, clip in enumerate(clips[:count]):
        result = videos[("i2v", model)][i]
        panels = [v[::4].transpose(1, 0, 2, 3).reshape(v.shape[1], -1, 3)[None]
                  for v in (clip.camera_ref, result, clip.target)]  # 3 x [1, H, f W, 3]
        rows.append(clone_lib.label_strip(panels, ["camera ref", "result", "truth"], 4)[0])
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", required=True, help="held-out mp4 triplet records")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--model", action="append", default=[], help="[NAME=]export dir (repeat)")
    p.add_argument("--no_camera", action="append", default=[],
                   help="[NAME=]export dir of a no-camera model (repeat)")
    p.add_argument("--tasks", default="i2v,v2v")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--copy", action="store_true",
                   help="also each --model with the target itself as camera reference: what "
                        "its sampler draws when the answer is in its reference")
    p.add_argument("--validate_only", action="store_true", help="the reference rows only (no model)")
    p.add_argument("--out", default=None, help="write the result here as JSON")
    p.add_argument("--md", default=None, help="write the table here as markdown")
    p.add_argument("--strip", default=None, help="write a picture of the first model's I2V")
    p.add_argument("--strip_clips", type=int, default=4)
    args = p.parse_args(argv)
    if args.validate_only:
        args.model, args.no_camera = [], []
    result = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    table = clone_eval.markdown(result["rows"])
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
