"""Benchmark: speed of the synthetic Camera Clone Dataset generator on this machine's CPU.

Runs the real command line (`python -m camclone_jax.data.synthetic`) in fresh processes, so JAX
start-up, jit compilation, rendering, mp4 encoding and record writing all count:

  1. throughput at 33 frames x 64x112: one group (120 triplets) from a cold start with the CLI,
     and the steady state in-process: after a warm-up group (which compiles the renderer), one
     more group with another seed, timed alone;
  2. the demo dataset: the CLI defaults, 3 groups x 17 frames x 64x112 = 360 triplets, which must
     take under 5 minutes.

  python benchmarks/synthetic.py [--demo_groups 3] [--skip_throughput]

Prints a small markdown table (for docs/performance.md). Outputs go to a temporary folder that is deleted.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(out, groups, frames, height=64, width=112):
    """Runs the generator CLI; returns the wall-clock seconds."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "camclone_jax.data.synthetic", "--out", out, "--num_groups",
           str(groups), "--frames", str(frames), "--height", str(height), "--width", str(width),
           "--seed", "0", "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return time.perf_counter() - start


def steady_state_seconds(tmp, frames=33, height=64, width=112):
    """Seconds for one group in a warm process (the renderer already compiled)."""
    sys.path.insert(0, REPO)
    from camclone_jax.data.synthetic import writer  # pylint: disable=import-outside-toplevel
    cfg = dict(num_groups=1, frames=frames, height=height, width=width)
    writer.generate_dataset(os.path.join(tmp, "warm"), writer.GeneratorConfig(seed=100, **cfg),
                            progress=False)
    start = time.perf_counter()
    writer.generate_dataset(os.path.join(tmp, "steady"), writer.GeneratorConfig(seed=101, **cfg),
                            progress=False)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo_groups", type=int, default=3)
    parser.add_argument("--skip_throughput", action="store_true")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            t1 = run_cli(os.path.join(tmp, "g1"), 1, 33)
            rows.append(("33 frames, 64x112, 1 group, cold CLI (start-up + compile)", 1, t1))
            rows.append(("33 frames, 64x112, 1 group, warm process (steady state)", 1,
                         steady_state_seconds(tmp)))
        demo = run_cli(os.path.join(tmp, "demo"), args.demo_groups, 17)
        rows.append((f"demo: {args.demo_groups} groups, 17 frames, 64x112", args.demo_groups, demo))
    print(f"\nmachine: {os.cpu_count()} CPU cores, load average {load:.1f} at start, "
          f"python {sys.version.split()[0]}")
    print("| setting | triplets | videos | wall s | triplets / min |")
    print("|---|---:|---:|---:|---:|")
    for name, groups, secs in rows:  # a group: 40 videos, 120 triplets (3 per target)
        print(f"| {name} | {120 * groups} | {40 * groups} | {secs:.1f} | {60 * 120 * groups / secs:.0f} |")
    if demo > 300:
        print(f"WARNING: the demo took {demo:.0f} s, over the 5 minute budget")


if __name__ == "__main__":
    main()
