"""Sample CamClone videos: copy the camera motion of a reference video onto an image or a video.

  python -m camclone_jax.sample --checkpoint CKPT --vae Wan2.1_VAE.pth \\
      --prompt_cache cache/prompts --camera_ref cam.mp4 --image first.png \\
      --prompt "a red car drives through snow" --out out.mp4        # I2V
  python -m camclone_jax.sample ... --content_ref content.mp4 ...    # V2V
  python -m camclone_jax.sample ... --jobs jobs.csv --out_dir results/   # batch

Any reference video (container, rate, length, size) is resampled to --frames (1 + 4k) frames of
--height x --width (multiples of 16): --sampling first (default: the first --frames frames in a
row, the last repeated when short, as the public release and the training pipeline read clips),
uniform (the whole reference retimed into the clip) or fps (real speed at --fps), --short
auto|error|loop|pad for references that are too short, --fit crop|pad|stretch with --max_crop for aspect ratios (camclone_jax/data/reference.py
has the rules). Text: --t5 + --tokenizer (JAX umT5, freed after encoding) or --prompt_cache;
models exported without text (text.json) need neither. I2V-base models with CLIP image tokens
need --clip. --mesh data=2,context=4 (or auto) shards sampling over devices. V2V is
conditioned on a first frame as the release does: --image if given (its first_frame_path), else
the content video's first frame (--v2v_first_frame none: none); --task i2v with --content_ref
zeroes the content video's latent (the release's --cameraclone_type i2v).

Batch mode: --jobs FILE (.csv with a header, or .jsonl objects), one job a row with the fields
camera_ref, prompt, image and / or content_ref, out (or --out_dir) and optionally task,
v2v_first_frame, negative_prompt, seed, frames, height, width, steps, shift, cfg, cfg_batched,
fps, solver, order, schedule, sampling, short, fit, max_crop; the public release's CSV names
(ref_video_path, content_video_path, caption, first_frame_path) work too. Relative input paths
are looked up beside the jobs file, then under its parent folders (the release's CSVs name
paths from its repository root), then from the working directory; empty fields take the
command-line values. All inputs are checked before any model loads; prompts
are encoded once for all jobs. Every output is written atomically: a failed sample leaves no
file. Exit status: 0 when every sample was written, 1 when some job failed (the others are
still written), 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

import jax

from camclone_jax import errors, sharding
from camclone_jax.data import reference
from camclone_jax.diffusion import sampler
from camclone_jax.inference import camera_reference, options, pipeline
from camclone_jax.inference.options import auto_mesh_axes
from camclone_jax.inference.prompts import WAN_NEGATIVE_PROMPT


def _bool(value) -> bool:
    """A jobs-file boolean: true/false, yes/no, 1/0 (any case)."""
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(value)
    return text in ("true", "yes", "1")


_OPTION_TYPES = {"frames": int, "height": int, "width": int, "steps": int, "shift": float,
                 "cfg": float, "cfg_batched": _bool, "seed": int, "fps": float, "order": int,
                 "max_crop": float, "negative_prompt": str, "solver": str, "schedule": str,
                 "sampling": str, "short": str, "fit": str, "task": str,
                 "v2v_first_frame": str}
_INPUTS = ("camera_ref", "image", "content_ref", "prompt", "out")
_PATHS = ("camera_ref", "image", "content_ref")
_ALIASES = {"ref_video_path": "camera_ref", "content_video_path": "content_ref",
            "caption": "prompt", "first_frame_path": "image",
            "video_path": None}  # the release's target video is unused
ERRORS = errors.USER_ERRORS + (KeyError,)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camclone_jax.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", required=True, help="DiT weights: our converted directory "
                   "(a training export), a diffusers directory or an original Wan/CamClone file")
    g.add_argument("--vae", help="Wan VAE weights (default: the checkpoint's codec.json)")
    g.add_argument("--t5", help="umT5 encoder weights (with --tokenizer)")
    g.add_argument("--tokenizer", help="umT5 tokenizer.json / spiece.model / folder")
    g.add_argument("--prompt_cache", help="prompt-embedding cache directory")
    g.add_argument("--clip", help="CLIP ViT-H/14 weights (I2V-base models with image tokens)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="DiT weight and compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)")
    g.add_argument("--mesh", help='device mesh, e.g. "data=2,context=4" or "auto" (default: one '
                   "device)")
    g.add_argument("--context_parallel", choices=["none", "ulysses", "ring"],
                   help="sequence-parallel attention over the mesh's context axis (default: the "
                   "checkpoint's setting; without it XLA partitions the attention itself)")
    g.add_argument("--timestep_rounding", choices=["none", "bfloat16"],
                   help="bfloat16: round timesteps to bf16 before the DiT, as the public release "
                   "does in training and sampling (default: the checkpoint's setting, none)")
    g = p.add_argument_group("inputs (one sample)")
    g.add_argument("--camera_ref", help="video whose camera motion is copied")
    g.add_argument("--camera_move", help='instead of --camera_ref: a camera move in words, e.g. '
                   '"pan left 20 deg, then dolly in 1 m"; its reference is rendered to '
                   "OUT_camera_ref.mp4 (+ .json poses) first (docs/reference.md)")
    g.add_argument("--image", help="first frame (I2V; with --content_ref, V2V's first frame, "
                   "the release's first_frame_path)")
    g.add_argument("--content_ref", help="content video (V2V)")
    g.add_argument("--task", choices=["i2v", "v2v"], help="default: v2v with --content_ref, "
                   "else i2v; i2v with --content_ref zeroes the content video's latent and keeps "
                   "its first frame (the release's --cameraclone_type i2v)")
    g.add_argument("--v2v_first_frame", default="content", choices=["content", "none"],
                   help="V2V's first frame: content (the release: --image, else the content "
                   "video's frame 0) or none (no first frame; this project's earlier rule)")
    g.add_argument("--prompt", default="", help="text prompt")
    g.add_argument("--out", help="output .mp4")
    g = p.add_argument_group("batch")
    g.add_argument("--jobs", help=".csv or .jsonl of jobs (see above)")
    g.add_argument("--out_dir", help="output folder for jobs without an 'out' field")
    g = p.add_argument_group("sampling")
    g.add_argument("--frames", type=int, default=81, help="1 + 4k")
    g.add_argument("--height", type=int, default=480)
    g.add_argument("--width", type=int, default=832)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--shift", type=float, default=5.0)
    g.add_argument("--cfg", type=float, default=None,
                   help="guidance scale (default 5; 1 for models without text)")
    g.add_argument("--sequential_cfg", dest="cfg_batched", action="store_false",
                   help="run the cond and uncond halves as two calls per step (half the "
                   "activation memory) instead of one batch of 2")
    g.add_argument("--negative_prompt", default=WAN_NEGATIVE_PROMPT,
                   help="default: Wan's standard negative prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fps", type=float, default=16.0, help="output frame rate")
    g.add_argument("--solver", default="euler", choices=sampler.SOLVERS)
    g.add_argument("--order", type=int, default=2, help="UniPC order (1-3)")
    g.add_argument("--schedule", choices=sampler.SPACINGS,
                   help="timestep spacing (default: release for euler, diffusers_unipc for unipc)")
    g = p.add_argument_group("references")
    g.add_argument("--sampling", default="first", choices=reference.SAMPLING,
                   help="first: the first --frames frames in a row (the release, and how "
                   "training reads clips); uniform: the whole reference retimed into the clip; "
                   "fps: real speed at --fps")
    g.add_argument("--short", default="auto", choices=reference.SHORT,
                   help="a reference with too few frames: auto (pad for --sampling first, as the "
                   "release; error otherwise), error, loop, pad (hold the last frame)")
    g.add_argument("--fit", default="crop", choices=reference.FIT)
    g.add_argument("--max_crop", type=float, default=reference.DEFAULT_MAX_CROP)
    g = p.add_argument_group("output")
    g.add_argument("--side_by_side", action="store_true", help="also write OUT_side_by_side.mp4: "
                   "camera ref | content ref or first frame | result")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def parse_mesh(spec: str | None):
    """'data=2,context=4' -> {'data': 2, 'context': 4}; None/'' -> None; 'auto' -> 'auto'."""
    if not spec:
        return None
    if spec == "auto":
        return "auto"
    axes = {}
    for part in spec.split(","):
        name, _, size = part.partition("=")
        try:
            axes[name.strip()] = int(size)
        except ValueError:
            raise ValueError(f"bad --mesh {spec!r}: expected name=size pairs like "
                             "data=2,context=4") from None
    return axes


def read_jobs(path: str) -> list[dict]:
    """Rows of a .csv (header) or .jsonl file as dicts with our field names (aliases mapped,
    empty values dropped, relative paths made relative to the file). A UTF-8 byte-order mark
    is allowed; a CSV without a header line or with a row of more or fewer fields than its
    header is refused, naming the line."""
    if not path.endswith((".csv", ".jsonl")) and not os.path.isdir(path):
        raise ValueError(f"jobs file {path} must be .csv or .jsonl")
    if path.endswith(".jsonl"):
        rows = _read_jsonl(errors.read_text(path, "jobs file"), path)
    else:
        rows = errors.read_csv(path, "jobs file",
                               _INPUTS + tuple(_OPTION_TYPES) + tuple(_ALIASES))
    base, jobs = os.path.dirname(os.path.abspath(path)), []
    for n, row in enumerate(rows, 1):
        job = {}
        for key, value in row.items():
            key = _ALIASES.get(key, key)
            if key is None or value is None or value == "":
                continue
            if key not in _INPUTS and key not in _OPTION_TYPES:
                raise ValueError(f"{path}: job {n} has an unknown field {key!r}; fields: "
                                 f"{sorted(_INPUTS + tuple(_OPTION_TYPES))}")
            if key in _PATHS:
                value = resolve_input(value, base)
            elif key == "out" and not os.path.isabs(value):
                value = os.path.join(base, value)
            job[key] = value
        jobs.append(job)
    if not jobs:
        raise ValueError(f"jobs file {path} has no jobs")
    return jobs


def _read_jsonl(text: str, path: str) -> list[dict]:
    """The objects of a .jsonl jobs file (blank lines skipped)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e})") from None
            if not isinstance(rows[-1], dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line")
    return rows


def resolve_input(value: str, base: str) -> str:
    """A jobs file's relative input path: beside the file, else under one of its parent
    folders (the release's CSVs name paths from its repository root), else from the working
    directory; the path beside the file when none exists (the error then names it)."""
    if os.path.isabs(value):
        return value
    folder = base
    while True:
        candidate = os.path.join(folder, value)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return os.path.abspath(value) if os.path.exists(value) else os.path.join(base, value)


def make_jobs(args) -> list[dict]:
    """The jobs of this run, each {inputs..., "options": {...}}, checked before models load."""
    defaults = {k: getattr(args, k) for k in _OPTION_TYPES}
    if args.jobs:
        raw = read_jobs(args.jobs)
    else:
        if not args.camera_ref or not args.out:
            raise ValueError("give --camera_ref and --out (or --jobs FILE)")
        raw = [{k: getattr(args, k) for k in _INPUTS if getattr(args, k) is not None}]
    jobs = []
    for n, row in enumerate(raw, 1):
        where = f"{args.jobs}: job {n}" if args.jobs else "arguments"
        opts = dict(defaults)
        for key, cast in _OPTION_TYPES.items():
            if key in row:
                try:
                    opts[key] = cast(row[key])
                except (TypeError, ValueError):
                    kind = "boolean" if cast is _bool else cast.__name__
                    raise ValueError(f"{where}: {key}={row[key]!r} is not a {kind}") from None
        if "camera_ref" not in row:
            raise ValueError(f"{where}: no camera_ref")
        problems = options.SampleOptions(**opts).problems()
        if problems:
            flag = "" if args.jobs else "--"  # name the flags on a command line
            raise ValueError(f"{where}: invalid sample options: "
                             + "; ".join(flag + p for p in problems))
        try:
            opts["task"] = pipeline.CamClonePipeline.task_of(
                options.SampleOptions(**opts), row.get("image"), row.get("content_ref"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        out = row.get("out") or (os.path.join(args.out_dir, f"job_{n:04d}.mp4") if args.out_dir
                                 else None)
        if out is None:
            raise ValueError(f"{where}: no output path (an 'out' field or --out_dir)")
        if not out.lower().endswith(".mp4"):
            raise ValueError(f"{where}: output {out} must end in .mp4")
        for key in ("camera_ref", "image", "content_ref"):
            if key in row and not os.path.exists(row[key]):
                raise FileNotFoundError(f"{where}: {key} not found: {row[key]}")
        if "out" in row:  # --out_dir is checked once below
            errors.check_output_file(out, "--out" if not args.jobs else f"{where}: out")
        jobs.append({"camera_ref": row["camera_ref"], "image": row.get("image"),
                     "content_ref": row.get("content_ref"), "prompt": row.get("prompt", ""),
                     "out": out, "options": opts})
    if args.out_dir:
        errors.check_output_dir(args.out_dir, "--out_dir")
    writers = {}
    for n, job in enumerate(jobs, 1):
        writers.setdefault(os.path.abspath(job["out"]), []).append(n)
    shared = {out: ns for out, ns in writers.items() if len(ns) > 1}
    if shared:
        raise ValueError(f"{args.jobs}: jobs write the same output file: " + "; ".join(
            f"jobs {', '.join(map(str, ns))} write {out}" for out, ns in shared.items()))
    return jobs


def render_camera_move(args) -> str:
    """Renders --camera_move's reference at the sample's size beside --out; returns its path."""
    if args.camera_ref or args.jobs or not args.out:
        raise ValueError("--camera_move makes the camera reference of one sample: give it with "
                         "--out, instead of --camera_ref and without --jobs")
    path = os.path.splitext(args.out)[0] + "_camera_ref.mp4"
    made = camera_reference.make_reference(path, move=args.camera_move, frames=args.frames,
                                           height=args.height, width=args.width, fps=args.fps)
    print(f"camera reference: {path} ({made['description']})")
    return path


def make_mesh(spec: str | None, pipe, opts):
    """The --mesh of a run (None: one device); "auto" sizes it for the first job's shapes."""
    axes = parse_mesh(spec)
    if axes != "auto":
        return None if axes is None else sharding.make_mesh(axes)
    _, f, h, w, _ = pipe.latent_shape(opts)
    pt, ph, pw = pipe.config.patch_size
    tokens = 3 * (f // pt) * (h // ph) * (w // pw)
    axes = auto_mesh_axes(len(jax.devices()), 2 if pipe.guidance(opts) != 1.0 else 1, tokens)
    return sharding.make_mesh(axes, jax.devices()[:axes["data"] * axes["context"]])


def run(args, stop: "StopOnSignals | None" = None) -> int:
    """Runs the parsed command line; returns the exit status. ``stop.event`` (set by a signal)
    stops sampling between denoising steps."""

    if args.camera_move:
        args.camera_ref = render_camera_move(args)
    jobs = make_jobs(args)
    for job in jobs:  # unreadable or mistyped inputs fail here, before any model loads
        for key in ("camera_ref", "content_ref"):
            if job[key]:
                info = reference.probe_video(job[key], key)
                if info.is_still_image:
                    raise reference.ReferenceError(
                        f"{key} {job[key]} is a still image ({info.demuxer}), expected a video")
        if job["image"]:
            info = reference.probe_video(job["image"], "image")
            if not info.is_still_image and info.frames > 1:
                raise reference.ReferenceError(f"image {job['image']} is a video ({info.frames} "
                                               "frames), expected a still image")
    pipe = pipeline.CamClonePipeline.from_checkpoint(
        args.checkpoint, vae=args.vae, t5=args.t5, tokenizer=args.tokenizer,
        prompt_cache=args.prompt_cache, clip=args.clip, dtype=args.dtype,
        context_parallel=args.context_parallel, timestep_rounding=args.timestep_rounding)
    if stop is not None:
        pipe.stop = stop.event
    prompts = []
    for n, job in enumerate(jobs, 1):
        opts = options.SampleOptions(**job["options"])
        try:
            pipe.check_options(opts)
        except ValueError as e:
            raise ValueError(f"{args.jobs}: job {n}: {e}" if args.jobs else e) from None
        prompts.append(job["prompt"])
        if pipe.guidance(opts) != 1.0:
            prompts.append(opts.negative_prompt)
    pipe.prepare_prompts(list(dict.fromkeys(prompts)))  # the text encoder loads once, then goes
    pipe.mesh = make_mesh(args.mesh, pipe, options.SampleOptions(**jobs[0]["options"]))
    failed = 0
    for n, job in enumerate(jobs, 1):
        opts = options.SampleOptions(**job["options"])
        pipe.check_stop(f"before job {n} of {len(jobs)}")
        try:
            result = pipe.generate(job["camera_ref"], job["prompt"], image=job["image"],
                                   content_ref=job["content_ref"], options=opts,
                                   progress=not args.no_progress)
            options.write_video(job["out"], result.video, opts.fps)
            if args.side_by_side:
                stem = job["out"][:-len(".mp4")]
                options.write_video(f"{stem}_side_by_side.mp4", result.side_by_side(), opts.fps)
        except ERRORS as e:
            if len(jobs) == 1:
                raise
            failed += 1
            print(f"job {n} ({job['out']}): error: {e}", file=sys.stderr)
            continue
        print(f"wrote {job['out']}: {options.describe(result)}")
    if failed:
        print(f"{failed} of {len(jobs)} jobs failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (128 + the signal's number when
    stopped by SIGINT / SIGTERM: the current step finishes, no file is left).

    The work runs in a thread while the main thread waits in short joins: a Python signal
    handler runs only in the main thread between bytecodes, never while it is blocked inside
    a compiled XLA program."""
    args = build_parser().parse_args(argv)
    with StopOnSignals() as stop:
        outcome = {}

        def work():
            try:
                outcome["status"] = _run_reporting(args, stop)
            except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
                outcome["error"] = e

        worker = threading.Thread(target=work, name="camclone-sample", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]


def _run_reporting(args, stop) -> int:
    """``run`` with its errors turned into one line and an exit status."""
    try:
        return run(args, stop)
    except pipeline.SamplingInterrupted as e:
        print(f"error: interrupted by {stop.signal_name}: {e}; the output of the "
              "unfinished sample was not written", file=sys.stderr)
        return 128 + stop.signal_number
    except ERRORS as e:
        return errors.report(e)


class StopOnSignals:
    """While active (main thread only), SIGINT and SIGTERM set ``event`` instead of killing
    the process, so sampling stops at the next denoising step; a second signal of the same
    kind then acts as usual (the default handler)."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_number, self.signal_name = 0, ""
        self._old = {}

    def _handle(self, signum, frame):
        if self.event.is_set():  # asked twice: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal_number, self.signal_name = signum, signal.Signals(signum).name
        print(f"{self.signal_name}: stopping after the current denoising step "
              "(send it again to stop at once)", file=sys.stderr)
        self.event.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


if __name__ == "__main__":
    sys.exit(main())
