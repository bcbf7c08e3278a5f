"""Camera references from words (camclone_jax.reference): the picture strip of docs/reference.md
and the render time of a full-size reference.

  python benchmarks/reference.py --out docs/reference_strip.png     # the strip: one move a row
  python benchmarks/reference.py --timing [--frames 81 --height 480 --width 832]
  python benchmarks/reference.py --round_trip [--frames 17 --height 96 --width 160]

The strip renders MOVES (each in its scene) at --frames x --height x --width and shows every
--stride-th frame side by side. --timing renders one move twice at the given size and prints the
seconds of the first call (with the ray caster's compilation) and of the second. --round_trip
estimates the camera of each rendered move with evaluate's pose backend (true intrinsics) and
prints its errors to the asked poses: the largest per-frame rotation error (deg) and the mean
normalised translation error (CamI2V's, eval/camera.py).
"""
import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clone_strip import panel, strip  # noqa: E402

from camclone_jax.data.synthetic import camera_ref, moves  # noqa: E402
from camclone_jax.eval import camera, pose_backends  # noqa: E402
from camclone_jax.eval.poses import PoseEstimationError  # noqa: E402

MOVES = (  # (words, scene, seed)
    ("pan left 30 deg", "indoor", 0),
    ("dolly in 1.5 m, then tilt up 15 deg", "indoor", 1),
    ("orbit right 40 deg while rising 10 deg", "outdoor", 0),
    ("truck right 1 m and roll clockwise 20 deg easing out", "outdoor", 2),
)


ROUND_TRIPS = ("pan left 20 deg, then tilt up 10 deg", "dolly in 1 m, then truck right 1 m",
               "pedestal up 1 m") + tuple(m[0] for m in MOVES)


def render(words, frames, height, width, scene="indoor", seed=0):
    """uint8 frames [F, H, W, 3] of a move in words, and the `moves.Move`."""
    move = moves.parse_move(words, frames, width / height)
    return camera_ref.render_reference(move.c2w, move.intrinsics, height, width, scene, seed), move


def round_trip(frames, height, width):
    """Prints the estimator's errors to the asked poses for each of ROUND_TRIPS."""
    for words in ROUND_TRIPS:
        video, move = render(words, frames, height, width)
        try:
            est = pose_backends.estimate(video, move.intrinsics)
        except PoseEstimationError as e:
            print(f"{words!r}: no estimate ({e})")
            continue
        err = camera.camera_errors(est.c2w, move.c2w)
        print(f"{words!r}: {est.mode}, rotation error max {np.degrees(err['rot']).max():.2f} "
              f"deg/frame, translation error mean {err['trans'].mean():.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/reference_strip.png")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--stride", type=int, default=4, help="every stride-th frame in the strip")
    p.add_argument("--timing", action="store_true", help="time one move instead of the strip")
    p.add_argument("--round_trip", action="store_true", help="estimate the moves' poses back")
    args = p.parse_args(argv)
    if args.round_trip:
        return round_trip(args.frames, args.height, args.width)
    if args.timing:
        for call in ("first (compiles)", "second"):
            start = time.perf_counter()
            render(MOVES[1][0], args.frames, args.height, args.width)
            print(f"{args.frames}x{args.height}x{args.width}, {call}: "
                  f"{time.perf_counter() - start:.1f} s")
        return None
    rows = []
    for words, scene, seed in MOVES:
        frames, move = render(words, args.frames, args.height, args.width, scene, seed)
        rows.append([panel(frames[::args.stride])])
        print(f"row {len(rows)} ({scene}, seed {seed}): {move.describe()}")
    img = strip(rows, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(img).save(args.out, optimize=True)
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]}, {os.path.getsize(args.out)} bytes)")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
