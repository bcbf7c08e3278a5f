"""The small-scale reproduction's evaluation (issue #11): every trained model of the chain on the
held-out synthetic split, I2V and V2V, scored against the TRUE camera poses, with baselines.

For each of the first --max_triplets held-out triplets (unseen scenes and trajectories) and
each model folder under --run that has an `export/` (camclone, channel, blocks, nocam), it
samples the I2V video (the target's first frame + the camera reference) and the V2V video (the
content reference + the camera reference), writes them to RUN/eval/MODEL/TASK/IDX.mp4, and
scores them with the same pipeline as `python -m camclone_jax.evaluate` (poses estimated from
the video, CamI2V RotErr / TransErr / CamMC against the camera reference's true trajectory,
which is the target's) plus the visual-quality proxy the synthetic data allows: PSNR of the
generated video against the ground-truth target. Rows from the same run:

  copy content   the content reference returned unchanged (V2V; no camera control)
  copy first     the first frame repeated (I2V; a static camera)
  target         the ground-truth target video: the pose estimator's own error

  python benchmarks/reproduce_eval.py --run RUN --split RUN/data/val [--max_triplets 24] \
      [--steps 20] [--out RUN/results.json] [--markdown RUN/results.md]

A model whose `no_camera` flag is set in MODELS is sampled with the camera latent zeroed, as it
was trained. Re-running reuses the videos already written (delete RUN/eval to redo them).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from camera_clone import read_triplets, write_true_poses  # noqa: E402

from camclone_jax import inference, tasks  # noqa: E402
from camclone_jax.data import transforms  # noqa: E402
from camclone_jax.eval import pose_backends, report  # noqa: E402
from camclone_jax.eval.psnr import psnr  # noqa: E402

# (folder under RUN, row label, sampled with the camera latent zeroed)
MODELS = (("camclone", "CamClone (frame concat, 3D attention)", False),
          ("channel", "channel concat (Table 5)", False),
          ("blocks", "whole blocks trained (Table 6)", False),
          ("nocam", "no camera reference", True))
TASKS = ("i2v", "v2v")


def load_triplet(rec, frames, height, width):
    """{camera_ref, content_ref, target}: uint8 clips [F, H, W, 3] of one triplet record."""
    clip = transforms.ClipConfig(num_frames=frames, height=height, width=width,
                                 short_video="repeat_last")
    return {k: transforms.load_clip(rec[k]["video"], clip)
            for k in ("camera_ref", "content_ref", "target")}


def write_pose_refs(triplets, folder, fps):
    """folder/IDX.txt: the true target poses of each triplet (RealEstate10K format)."""
    os.makedirs(folder, exist_ok=True)
    for i, rec in enumerate(triplets):
        write_true_poses(rec, os.path.join(folder, f"{i:05d}.txt"), fps)


def reference_use(pipe, clips, no_camera, t=0.9, count=8):
    """Does the model read its references? The clean-sample error of its prediction at noise
    level t (fixed noise) on the first ``count`` held-out triplets, V2V, with the true camera and
    content references, with the camera reference zeroed, and with the content reference
    zeroed. A model that uses a reference predicts worse without it; the no-camera model gets
    a zero camera latent in all three (as trained). Returns {"true", "no_camera",
    "no_content"}: mean squared error per latent value (the latents' variance for scale)."""
    import jax
    import jax.numpy as jnp

    from camclone_jax.diffusion import flow
    from camclone_jax.models.dit import DiT

    model, params, cfg = DiT(pipe.config), pipe.params(), pipe.config
    apply = jax.jit(lambda x, tt, text, kwargs: model.apply({"params": params}, x, tt, text,
                                                           **kwargs))
    errors = {"true": [], "no_camera": [], "no_content": [], "variance": []}
    text = jnp.asarray(pipe.text.embed([""]))  # [1, L, D] (zeros: the tiny models)
    for i, clip in enumerate(clips[:count]):
        enc = {k: pipe.codec.encode(jnp.asarray(clip[k], jnp.float32)[None] / 127.5 - 1.0)
               for k in ("target", "camera_ref", "content_ref")}  # [1, f, h, w, C]
        x = enc["target"]
        xt = flow.add_noise(x, jax.random.normal(jax.random.key(i), x.shape), jnp.array([t]))
        image = None  # V2V's first frame, as sampling gives it: the content's frame 0
        if cfg.cond_channels:
            image = pipe.codec.encode(tasks.first_frame_video(
                jnp.asarray(clip["content_ref"][:1], jnp.float32) / 127.5 - 1.0,
                clip["target"].shape[0]))  # [1, f, h, w, C]
        zero = jnp.zeros_like(x)
        cam = zero if no_camera else enc["camera_ref"]
        for name, (c, n) in {"true": (cam, enc["content_ref"]), "no_camera": (zero, enc["content_ref"]),
                             "no_content": (cam, zero)}.items():
            kwargs = tasks.dit_inputs(cfg, task="v2v", cam_latents=c, content_latents=n,
                                      image_latents=image)
            v = apply(xt, jnp.array([1000.0 * t]), text, kwargs)
            x_hat = xt - t * v  # the clean-sample prediction [1, f, h, w, C]
            errors[name].append(float(jnp.mean((x_hat - x) ** 2)))
        errors["variance"].append(float(jnp.var(x)))
    return {k: float(np.mean(v)) for k, v in errors.items()}


def generate_model(pipe, out_dir, clips, captions, fps, steps, no_camera):
    """Samples every triplet I2V and V2V into out_dir/TASK/IDX.mp4 (skipping existing files);
    returns {task: [psnr per triplet]} and the seconds spent sampling."""
    from camclone_jax.data import video as video_lib
    frames, height, width = clips[0]["target"].shape[:3]
    opts = dict(frames=frames, height=height, width=width, steps=steps, shift=1.0, cfg=1.0,
                fps=fps, progress=False, no_camera=no_camera)
    scores, start = {t: [] for t in TASKS}, time.time()
    for task in TASKS:
        os.makedirs(os.path.join(out_dir, task), exist_ok=True)
        for i, (clip, caption) in enumerate(zip(clips, captions)):
            path = os.path.join(out_dir, task, f"{i:05d}.mp4")
            if os.path.exists(path):
                result_video = video_lib.read_video(path)[0]
            else:
                cond = ({"image": clip["target"][0]} if task == "i2v"
                        else {"content_ref": clip["content_ref"]})
                result_video = pipe.generate(clip["camera_ref"], caption, seed=i, **cond,
                                             **opts).video
                inference.write_video(path, result_video, fps)
            scores[task].append(psnr(result_video, clip["target"]))
    return scores, time.time() - start


def baseline_videos(clips, work, fps):
    """work/{copy_content,copy_first,target}/IDX.mp4; returns {label: (task, folder, mean PSNR
    against the target or None for the target itself)}."""
    rows = {"copy content": ("v2v", "copy_content", lambda c: c["content_ref"]),
            "copy first frame": ("i2v", "copy_first",
                                 lambda c: np.broadcast_to(c["target"][:1], c["target"].shape)),
            "target": ("both", "target", lambda c: c["target"])}
    out = {}
    for label, (task, name, make) in rows.items():
        folder = os.path.join(work, name)
        os.makedirs(folder, exist_ok=True)
        scores = []
        for i, clip in enumerate(clips):
            video = np.ascontiguousarray(make(clip))  # [F, H, W, 3]
            inference.write_video(os.path.join(folder, f"{i:05d}.mp4"), video, fps)
            scores.append(psnr(video, clip["target"]))
        out[label] = (task, folder, None if name == "target" else float(np.mean(scores)))
    return out


def score(folder, pose_dir, options, name):
    """report.evaluate over folder/IDX.mp4 against the true poses in pose_dir."""
    pairs = report.pairs_by_name(folder, pose_dir)
    return report.evaluate(pairs, options, name=name)


def markdown(rows):
    """The results table: one row per (method, task)."""
    lines = ["| Method | Task | RotErr (deg/frame) ↓ | TransErr ↓ | CamMC ↓ | PSNR vs target ↑ "
             "| Pose failures |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["summary"]

        def cell(key, fmt="{:.2f}"):
            return fmt.format(s[key]) if key in s and s[key] is not None else "-"
        quality = "-" if r["psnr"] is None else f"{r['psnr']:.2f}"
        lines.append(f"| {r['label']} | {r['task'].upper()} | {cell('RotErr')} | "
                     f"{cell('TransErr', '{:.3f}')} | {cell('CamMC', '{:.3f}')} | {quality} | "
                     f"{r['num_failed']}/{r['num_pairs']} |")
    return "\n".join(lines)


def probe_table(probes):
    """Markdown: the reference-use probe of each model (``reference_use``)."""
    lines = ["| Model (V2V, t = 0.9) | x-hat MSE, true refs | camera zeroed | content zeroed "
             "| target variance |", "|---|---:|---:|---:|---:|"]
    for label, p in probes.items():
        lines.append(f"| {label} | {p['true']:.3f} | {p['no_camera']:.3f} | "
                     f"{p['no_content']:.3f} | {p['variance']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the chain's run folder (holds MODEL/export)")
    p.add_argument("--split", required=True, help="held-out synthetic dataset folder (mp4)")
    p.add_argument("--max_triplets", type=int, default=24)
    p.add_argument("--steps", type=int, default=20, help="Euler sampling steps")
    p.add_argument("--out", help="results JSON (default RUN/results.json)")
    p.add_argument("--poses", choices=pose_backends.BACKENDS, default=pose_backends.DEFAULT_BACKEND,
                   help="camera-pose backend (as evaluate's --poses)")
    p.add_argument("--markdown", help="results table (default RUN/results.md)")
    args = p.parse_args(argv)
    start = time.time()
    triplets = read_triplets(args.split, args.max_triplets)
    first = triplets[0]
    fps = float(first["fps"])
    frames, height, width = first["num_frames"], first["height"], first["width"]
    clips = [load_triplet(rec, frames, height, width) for rec in triplets]
    captions = [rec["caption"] for rec in triplets]
    options = report.EvalOptions(degrees=True, reduction="mean", pose_backend=args.poses)
    eval_dir = os.path.join(args.run, "eval")
    pose_dir = os.path.join(eval_dir, "true_poses")
    write_pose_refs(triplets, pose_dir, fps)
    rows, timings, probes = [], {}, {}
    for folder, label, no_camera in MODELS:
        export = os.path.join(args.run, folder, "export")
        if not os.path.isdir(export):
            print(f"skipping {folder}: no {export}", flush=True)
            continue
        pipe = inference.CamClonePipeline.from_checkpoint(export)
        scores, seconds = generate_model(pipe, os.path.join(eval_dir, folder), clips,
                                         captions, fps, args.steps, no_camera)
        timings[folder] = seconds
        probe = reference_use(pipe, clips, no_camera)
        probes[label] = probe
        print(f"{folder} reference use (x-hat MSE at t=0.9): {probe}", flush=True)
        for task in TASKS:
            result = score(os.path.join(eval_dir, folder, task), pose_dir, options,
                           f"{folder}/{task}")
            rows.append({"label": label, "model": folder, "task": task,
                         "psnr": float(np.mean(scores[task])), "psnr_per_video": scores[task],
                         **result})
            print(f"{folder} {task}: RotErr {result['summary'].get('RotErr')} "
                  f"({result['num_failed']} failed; {time.time() - start:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for label, (task, folder, quality) in baseline_videos(clips, work, fps).items():
            result = score(folder, pose_dir, options, label)
            rows.append({"label": label, "model": None, "task": task, "psnr": quality,
                         **result})
    table = markdown(rows) + "\n\n" + probe_table(probes)
    print(f"\n{len(triplets)} held-out triplets ({frames} frames, {height}x{width}); RotErr in "
          "degrees per frame, TransErr and CamMC per frame, against the true poses\n")
    print(table)
    out = args.out or os.path.join(args.run, "results.json")
    report.write_report(out, {"split": os.path.abspath(args.split), "triplets": len(triplets),
                              "steps": args.steps, "sampling_seconds": timings,
                              "reference_use": probes,
                              "seconds": time.time() - start, "rows": rows})
    with open(args.markdown or os.path.join(args.run, "results.md"), "w") as f:
        f.write(table + "\n")
    print(f"results: {out} ({time.time() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
