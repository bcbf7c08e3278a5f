"""Time to clone: wall time and steps from random init until the shipped recipe reads the camera.

Trains ``camclone_jax.wallpaper_train``'s recipe (the shipped tiny model's, or the one given) in
a fresh work directory, measuring the held-out I2V reference-use gap (clean-sample error at
t = 0.95 with the camera reference zeroed minus with it) every --log_every steps, and stops at
the first measurement where it reaches --threshold. Prints one JSON line: steps, wall seconds
(compilation included), the gap reached and the threshold; "reached": false when --max_steps
ran out first. Run it alone on the machine: it is a wall-time figure.

  python benchmarks/time_to_clone.py --recipe camclone_jax/assets/models/clone_tiny/recipe.json \\
      --threshold 0.05 --max_steps 5000
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time

from camclone_jax.training import wallpaper as wallpaper_train


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=None, help="recipe.json (default: Recipe())")
    p.add_argument("--threshold", type=float, default=0.05, help="I2V camera gap to reach")
    p.add_argument("--max_steps", type=int, default=5000)
    p.add_argument("--log_every", type=int, default=250)
    p.add_argument("--out", default=None, help="also append the JSON line here")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a recipe field, e.g. --set head_dim=64 --set lr=3e-4")
    p.add_argument("--tiny", action="store_true", help="a tiny model (for tests only)")
    args = p.parse_args(argv)
    if args.recipe:
        recipe = wallpaper_train.Recipe.load(args.recipe)
    else:
        recipe = wallpaper_train.Recipe()
    if args.set:
        fields = recipe.to_dict()
        for item in args.set:
            name, _, value = item.partition("=")
            if name not in fields or name == "world":
                raise SystemExit(f"--set {item}: not a recipe field")
            fields[name] = json.loads(value)
        recipe = wallpaper_train.Recipe.from_dict(fields)
    if args.tiny:
        recipe = dataclasses.replace(recipe, dim=16, head_dim=8, layers=1, batch=2,
                                     probe_batch=2)
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        records = wallpaper_train.train(recipe, work, args.max_steps, save_every=10 ** 9,
                                        log_every=args.log_every, export=False,
                                        stop_gap=args.threshold, log=lambda _: None)
    last = records[-1]
    result = {"steps": last["step"], "wall_s": round(time.time() - start, 1),
              "gap": last["i2v"]["gap"], "threshold": args.threshold,
              "reached": last["i2v"]["gap"] >= args.threshold,
              "recipe": recipe.to_dict()}
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
