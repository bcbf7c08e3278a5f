"""Command line: render a camera reference video from a move in words, a pose file, or an edit.

  python -m camclone_jax.reference --move "pan left 20 deg, then dolly in 1 m" --out ref.mp4
  python -m camclone_jax.reference --poses cam.txt --out ref.mp4 [--edit "scaled 0.5"]
  python -m camclone_jax.reference --from_video ref.mp4 --edit "reversed, slower 2" --out new.mp4
      [--frames 81] [--height 480] [--width 832] [--fps 16] [--scene indoor|outdoor] [--seed 0]

A neutral, richly textured scene is filmed along the camera path (the synthetic dataset's JAX
ray caster) and the poses are written beside the video (OUT's stem + .json, camera-to-world).
--poses reads RealEstate10K / CameraCtrl .txt, JSON c2w and MegaSaM .npz files as `evaluate`
does; --from_video estimates the camera with `evaluate`'s pose backend. docs/reference.md has
the vocabulary of moves and edits; the logic is camclone_jax.inference.camera_reference, so a
notebook can call the same function. Bad moves, edits, pose files and sizes exit with status 2
and one line naming the problem.
"""
import argparse
import sys

from camclone_jax.data.synthetic import scene
from camclone_jax.eval import pose_backends, poses
from camclone_jax.inference import camera_reference


def parse_args(argv):
    """The parsed command line; a source other than exactly one exits with status 2."""
    p = argparse.ArgumentParser(prog="python -m camclone_jax.reference",
                                description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--move", help='a camera move in words, e.g. "pan left 20 deg, then dolly '
                     'in 1 m" (pan, tilt, roll, truck, pedestal, dolly, orbit, hold; easing '
                     'in/out; "with a 35 mm lens")')
    src.add_argument("--poses", metavar="FILE",
                     help="a pose file: RealEstate10K / CameraCtrl .txt, JSON c2w, MegaSaM .npz")
    src.add_argument("--from_video", metavar="VIDEO",
                     help="a video whose estimated camera move is rendered (edited with --edit)")
    p.add_argument("--edit", help='edits of the path, in order: "slower [X]", "faster [X]", '
                   '"reversed", "mirrored", "scaled X", e.g. "reversed, slower 2"')
    p.add_argument("--out", required=True, help="output .mp4 (the poses go to OUT's stem + .json)")
    p.add_argument("--frames", type=int, default=81, help="1 + 4k")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--scene", default="indoor", choices=scene.REFERENCE_KINDS)
    p.add_argument("--seed", type=int, default=0, help="which scene of its kind")
    p.add_argument("--supersample", type=int, default=1, help="rays per pixel per axis")
    p.add_argument("--pose_backend", choices=pose_backends.BACKENDS,
                   default=pose_backends.DEFAULT_BACKEND, help="camera estimator of --from_video")
    p.add_argument("--fov_deg", type=float, default=poses.DEFAULT_FOV_DEG,
                   help="horizontal field of view of --from_video's camera (as evaluate assumes)")
    return p.parse_args(argv)


def main(argv=None):
    """Entry point; returns the summary of the written reference."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = camera_reference.make_reference(
            args.out, move=args.move, poses=args.poses, from_video=args.from_video,
            edit=args.edit, frames=args.frames, height=args.height, width=args.width,
            fps=args.fps, scene=args.scene, seed=args.seed, supersample=args.supersample,
            pose_backend=args.pose_backend, fov_deg=args.fov_deg)
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {result['video']} ({'x'.join(map(str, result['frames'][:3]))}, rendered in "
          f"{result['seconds']:.1f} s) and {result['poses']}: {result['description']}")
    return result


if __name__ == "__main__":
    main()
