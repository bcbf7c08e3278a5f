"""Command line: render a synthetic Camera Clone Dataset.

  python -m camclone_jax.data.synthetic --out DIR --num_groups 3 --frames 17 --height 64 \
      --width 112 --seed 0 [--fps 15] [--triplets_per_target 3] [--num_shards 0]
      [--moves pan,tilt,roll --max_angle 30 --max_roll 40 --constant_speed --scenes textured]

Each group is 4 locations x 10 synchronized cameras = 40 videos and (by default) 120 triplets.
See camclone_jax/data/synthetic/writer.py for the folder layout.
"""
import argparse
import sys

from camclone_jax import errors
from camclone_jax.data.synthetic import dataset, writer


def parse_args(argv):
    """Parses command-line arguments into a GeneratorConfig and the output folder."""
    d = writer.GeneratorConfig()
    p = argparse.ArgumentParser(prog="python -m camclone_jax.data.synthetic",
                                description="Render a procedural Camera Clone Dataset.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num_groups", type=int, default=d.num_groups, help="groups of 4 locations")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per video")
    p.add_argument("--height", type=int, default=d.height, help="frame height (even)")
    p.add_argument("--width", type=int, default=d.width, help="frame width (even)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--triplets_per_target", type=int, default=d.triplets_per_target,
                   help="triplets kept per target video (1-27)")
    p.add_argument("--num_shards", type=int, default=d.num_shards,
                   help="ArrayRecord shards (0: one per 4 groups)")
    p.add_argument("--supersample", type=int, default=d.supersample, help="rays per pixel per axis")
    p.add_argument("--crf", type=int, default=d.crf, help="x264 constant rate factor")
    p.add_argument("--preview_triplets", type=int, default=d.preview_triplets)
    p.add_argument("--moves", default=d.moves,
                   help="comma-separated basic moves to draw, e.g. pan,tilt,roll (default: the "
                        "paper's mix of moves, arcs, splines and static shots)")
    p.add_argument("--max_angle", type=float, default=d.max_angle,
                   help="pan / tilt cap in degrees (0: the paper's 75)")
    p.add_argument("--max_roll", type=float, default=d.max_roll,
                   help="roll cap in degrees (0: the paper's 340)")
    p.add_argument("--constant_speed", action="store_true", help="no ease profiles")
    p.add_argument("--scenes", default=d.scenes, choices=dataset.SCENE_STYLES,
                   help="paper: a subject, day or night; textured: strong textures, daylight")
    p.add_argument("--lens_mm", default=d.lens_mm,
                   help="comma-separated focal lengths in mm on a 36 mm sensor (default: the "
                        "paper's 18,24,35,50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    config = writer.GeneratorConfig(**fields)
    try:
        config.validate()
    except ValueError as e:
        p.error(str(e))
    return args.out, config, not args.quiet


def main(argv=None):
    """Entry point; returns the dataset's metadata dict."""
    out, config, progress = parse_args(sys.argv[1:] if argv is None else argv)
    with errors.exit_on_user_error():
        errors.check_output_dir(out, "--out")
        meta = writer.generate_dataset(out, config, progress=progress)
    if progress:
        c = meta["counts"]
        print(f"{out}: {c['triplets']} triplets, {c['videos']} videos in {c['shards']} shard(s)")
    return meta


if __name__ == "__main__":
    main()
