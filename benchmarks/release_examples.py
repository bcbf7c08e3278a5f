"""Benchmark: `python -m camclone_jax.sample` on the public release's own example CSV and videos.

The release (github.com/KwaiVGI/CamCloneMaster) ships 19 camera references (832x480, 30 fps,
77 frames), content videos (672x384, 15 fps, 120 frames) and first frames (jpg), listed in
`demo/example_csv/infer/example_camclone_testset.csv` with repository-root-relative paths and
the columns ref_video_path, content_video_path, caption, first_frame_path. Its README runs that
CSV twice: `--cameraclone_type i2v` and `--cameraclone_type v2v`. This script runs our sampler
on the same CSV, unmodified, the same two ways (`--task i2v` / `--task v2v`), and reports every
job: written or not, the output's shape, the time.

No released weights can be used here, so the DiT is a tiny random model with the release's
conditioning layout (an I2V base: 4 mask + latent first-frame channels; no text, no CLIP) over
the pixel codec; what is measured is that every input is read and conditioned as the release
does, not the picture.

  python benchmarks/release_examples.py --release DIR [--out DIR] [--frames 81] \\
      [--height 96] [--width 176] [--steps 2]

DIR is a checkout of the release (only its demo/ folder is read; e.g. `git archive HEAD demo |
tar -x -C DIR` from a clone). Prints a markdown table and writes OUT/report.json.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from camclone_jax.inference import cli as sample
from camclone_jax.convert.transformer import save_transformer
from camclone_jax.data import video
from camclone_jax.data.codec import PixelCodec
from camclone_jax.models import DiTConfig, param_shapes

CSV = os.path.join("demo", "example_csv", "infer", "example_camclone_testset.csv")


def tiny_release_like_model(path: str):
    """A random DiT shaped like the release's I2V base (first-frame channels), pixel codec."""
    c = PixelCodec().latent_channels
    cfg = DiTConfig(dim=32, ffn_dim=64, num_layers=2, num_heads=2, in_channels=2 * c + 4,
                    out_channels=c, text_dim=8, freq_dim=16)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(cfg))
    save_transformer(path, cfg, params, overwrite=True)
    for name, spec in (("codec.json", PixelCodec().to_dict()),
                       ("text.json", {"kind": "none", "text_len": 4})):
        with open(os.path.join(path, name), "w") as f:
            json.dump(spec, f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--release", required=True, help="a checkout of the release (its demo/)")
    p.add_argument("--out", default="", help="output folder (default: a temporary one)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=176)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)
    csv_path = os.path.join(args.release, CSV)
    if not os.path.isfile(csv_path):
        sys.exit(f"error: {csv_path} not found; --release must be a checkout of the release")
    out = args.out or tempfile.mkdtemp(prefix="release_examples_")
    model = os.path.join(out, "model")
    tiny_release_like_model(model)
    jobs = sample.read_jobs(csv_path)
    rows = []
    for task in ("i2v", "v2v"):
        start = time.perf_counter()
        status = sample.main(["--checkpoint", model, "--jobs", csv_path, "--task", task,
                              "--out_dir", os.path.join(out, task), "--frames", str(args.frames),
                              "--height", str(args.height), "--width", str(args.width),
                              "--steps", str(args.steps), "--no_progress"])
        seconds = time.perf_counter() - start
        for n, job in enumerate(jobs, 1):
            path = os.path.join(out, task, f"job_{n:04d}.mp4")
            shape = list(video.read_video(path)[0].shape) if os.path.exists(path) else None
            rows.append({"task": task, "job": n, "camera_ref": os.path.relpath(
                job["camera_ref"], args.release), "written": shape is not None, "shape": shape})
        rows.append({"task": task, "exit_status": status, "seconds": round(seconds, 1)})
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("| task | jobs | written | output shape | exit status | seconds |")
    print("|---|---:|---:|---|---:|---:|")
    for task in ("i2v", "v2v"):
        done = [r for r in rows if r["task"] == task and "job" in r]
        summary = next(r for r in rows if r["task"] == task and "exit_status" in r)
        shapes = sorted({"x".join(map(str, r["shape"])) for r in done if r["shape"]})
        print(f"| {task} | {len(done)} | {sum(r['written'] for r in done)} | "
              f"{', '.join(shapes)} | {summary['exit_status']} | {summary['seconds']} |")
    print(f"report: {os.path.join(out, 'report.json')}")
    return 0 if all(r["written"] for r in rows if "job" in r) else 1


if __name__ == "__main__":
    sys.exit(main())
