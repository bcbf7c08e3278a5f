"""Time to clone: steps and seconds from random init until a clone-world run reads its camera.

Trains ``configs/clone_tiny.py`` (or ``--config FILE[:arg]``) with ``python -m
camclone_jax.train``'s ``train_and_evaluate`` in a fresh work directory, in chunks of
--every steps (each chunk resumes the last; the trainer's resume is exact), and reads the
held-out I2V camera gap (``val_camera_gap_i2v``: the validation loss at the config's eval_t
with the camera reference zeroed minus with it) after each chunk; it stops at the first
chunk where the gap reaches --threshold. Prints one JSON line: steps, wall seconds (all of it)
and train seconds (without each chunk's compilation), the gap reached, the threshold;
"reached": false when --max_steps ran out first. Run it alone on the machine: it is a
wall-time figure.

  python benchmarks/time_to_clone.py --threshold 0.5 --max_steps 2000 --every 250
  python benchmarks/time_to_clone.py --set model.num_layers=2 --set optim.lr=3e-4
"""
import argparse
import ast
import json
import os
import sys
import tempfile
import time

from camclone_jax.training import loop
from camclone_jax.training.run_config import override, sibling_config
from camclone_jax.utils import write_atomic

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(spec: str, sets: list[str]):
    """configs/<name>.py[:arg] with dotted --set overrides (values as Python literals)."""
    name, _, arg = spec.partition(":")
    config = sibling_config(os.path.join(CONFIGS, "x.py"), name, arg)
    for item in sets:
        key, _, value = item.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a plain string
        try:
            override(config, {key: value})
        except KeyError as e:
            raise SystemExit(f"--set {item}: {e.args[0]}") from None
    return config


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="clone_tiny", help="a configs/ name[:arg]")
    p.add_argument("--threshold", type=float, default=0.5, help="I2V camera gap to reach")
    p.add_argument("--max_steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=250, help="steps between measurements")
    p.add_argument("--out", default=None, help="also append the JSON line here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4")
    args = p.parse_args(argv)
    config = load(args.config, args.set)
    config.update(eval_every=args.every, export=False)
    config.sample.enabled = config.clone_check.enabled = False
    start, train_s, steps, gap = time.time(), 0.0, 0, float("nan")
    with tempfile.TemporaryDirectory() as work:
        while steps < args.max_steps:
            config.total_steps = min(steps + args.every, args.max_steps)
            t = time.time()
            summary = loop.train_and_evaluate(config, work)
            train_s += time.time() - t - summary["compile_s"]
            steps = summary["step"]
            gap = summary["val_gaps"][steps]["val_camera_gap_i2v"]
            if gap >= args.threshold:
                break
    result = {"steps": steps, "wall_s": round(time.time() - start, 1),
              "train_s": round(train_s, 1), "gap": gap, "threshold": args.threshold,
              "reached": gap >= args.threshold, "config": args.config, "set": args.set}
    line = json.dumps(result)
    print(line)
    if args.out:
        old = open(args.out).read() if os.path.exists(args.out) else ""
        write_atomic(args.out, old + line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
