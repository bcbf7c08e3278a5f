"""Steps/s of the main trainer against the side wallpaper trainer on the same recipe (issue 25).

Both train the shipped tiny CamClone recipe (3 layers, 64 wide, batch 16, the clean-sample loss
on frames 1.., t floor 0.5 / 25% anywhere, Adam 1e-3, the same-scene curriculum):
``python -m camclone_jax.train --config=configs/clone_tiny.py`` (its Grain loader over the
procedural source, orbax checkpoints every 250 steps, metrics.jsonl / TensorBoard logging)
and ``camclone_jax.training.wallpaper`` (batches drawn inside the jitted step, orbax
checkpoints every 250 steps). Steps/s after compilation is (N - M) / (T(N) - T(M)) with T the
wall time of a fresh run of that many steps, validation, export and closing checks off; the
runs alternate (main, side, main, side ...) ``--repeats`` times and the medians are reported.

  python benchmarks/one_trainer_speed.py --short 20 --long 220 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from camclone_jax.training import loop  # noqa: E402
from camclone_jax.training import wallpaper as side  # noqa: E402
from camclone_jax.training.run_config import sibling_config  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "x.py")


def main_trainer(steps: int) -> float:
    """Wall seconds of a fresh main-trainer run of ``steps`` steps."""
    config = sibling_config(CONFIG, "clone_tiny")
    config.update(total_steps=steps, eval_every=0, export=False)
    config.sample.enabled = config.clone_check.enabled = False
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        loop.train_and_evaluate(config, work)
        return time.perf_counter() - t


def side_trainer(steps: int) -> float:
    """Wall seconds of a fresh side-trainer run of ``steps`` steps (its probe once, at 0)."""
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        side.train(side.Recipe(), work, steps, save_every=250, log_every=10 ** 9,
                   export=False, log=lambda _: None)
        return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", type=int, default=20)
    p.add_argument("--long", type=int, default=220)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rates = {"main": [], "side": []}
    for _ in range(args.repeats):
        for name, fn in (("main", main_trainer), ("side", side_trainer)):
            rate = (args.long - args.short) / (fn(args.long) - fn(args.short))
            rates[name].append(rate)
            print(f"{name}: {rate:.2f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"steps_per_s": med, "runs": rates,
                      "main_over_side": med["main"] / med["side"]}, indent=1))


if __name__ == "__main__":
    main()
