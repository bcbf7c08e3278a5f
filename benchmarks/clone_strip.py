"""Picture strip of the shipped tiny model: camera reference | first frame or content | result |
ground truth, at the latent frames, for held-out wallpaper clips (I2V rows, then V2V rows).

  python benchmarks/clone_strip.py --model camclone_jax/assets/models/clone_tiny --out docs/clone_strip.png
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

from camclone_jax import inference
from camclone_jax.eval import clone as clone_eval
from camclone_jax.inference import clone as clone_lib

GAP = 4  # pixels between panels (before upscaling)


def panel(frames: np.ndarray) -> np.ndarray:
    """Frames [n, H, W, 3] side by side with gaps: [H, n (W + GAP) - GAP, 3]."""
    n, h, w, _ = frames.shape
    out = np.full((h, n * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        out[:, i * (w + GAP):i * (w + GAP) + w] = f
    return out


def strip(rows: list[list[np.ndarray]], scale: int) -> np.ndarray:
    """Rows of panels stacked with gaps, upscaled ``scale`` times (nearest)."""
    lines = [np.concatenate([np.concatenate([p, np.full((p.shape[0], 3 * GAP, 3), 255, np.uint8)],
                                            1) for p in row], 1) for row in rows]
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, GAP), (0, width - line.shape[1]), (0, 0)), constant_values=255)
             for line in lines]
    img = np.concatenate(lines, 0)
    return img.repeat(scale, 0).repeat(scale, 1)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=clone_lib.SHIPPED)
    p.add_argument("--out", default="docs/clone_strip.png")
    p.add_argument("--examples", type=int, default=3, help="rows per task")
    p.add_argument("--paths", choices=("constant", "path"), default="path")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling")
    args = p.parse_args(argv)
    world = clone_lib.load_world(args.model)
    pipe = inference.CamClonePipeline.from_checkpoint(args.model)
    clips = clone_eval.held_out_clips(world, args.examples, args.paths)
    r = world.temporal_factor
    rows = []
    for task in ("i2v", "v2v"):
        videos = clone_lib.generate_all(pipe, clips, task, steps=args.steps)
        for clip, video in zip(clips, videos):
            given = clip.first_frame[None] if task == "i2v" else clip.content[::r]
            rows.append([panel(clip.camera_ref[::r]), panel(given), panel(video[::r]),
                         panel(clip.target[::r])])
    img = strip(rows, args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(img).save(args.out)
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]}): rows = {args.examples} I2V then "
          f"{args.examples} V2V; columns = camera reference | first frame or content | result "
          "| ground truth")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
