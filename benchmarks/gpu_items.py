"""The measured items of ``benchmarks/gpu_suite.py``, and the CUDA lowering of its programs.

Each item is a function returning a JSON-able dict; the suite runs each in its own worker
process (its own peak memory) after the carried wheels are installed, which is why this module
(importing torch, jax and the benchmarks that import diffusers) is separate from the driver.
Two sizes: "full" (Wan 2.1 1.3B at the release's and the paper's resolutions, bf16 on one GPU)
and "dry" (the same code at a tiny size, float32 on the CPU, seconds).

Every item calls the benchmark that owns its measurement: ``train_step`` (our jitted CamClone
step, the diffusers step, the FLOP count), ``sample`` (the guided sampling step in both
frameworks, a whole ``CamClonePipeline.generate``), ``cost_cutting`` (the options' tokens,
FLOPs and times). ``lower_for_cuda`` lowers the full-size training and sampling programs for
CUDA on any machine (cuDNN attention included) from abstract shapes: nothing is allocated.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import torch

try:  # private jax modules, used by the CUDA lowering alone: a jax that moved them stops it only
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention
    from jax._src.lib import cuda_versions
    PRIVATE_JAX = None
except ImportError as e:
    cudnn_attention = cuda_versions = None
    PRIVATE_JAX = f"{type(e).__name__}: {e}"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cost_cutting  # noqa: E402  (the benchmarks this suite runs)
import sample  # noqa: E402
import train_step  # noqa: E402
from dit import _alternate  # noqa: E402

from camclone_jax import models  # noqa: E402
from camclone_jax.inference import denoise  # noqa: E402
from camclone_jax.training import observe  # noqa: E402

# Latent sizes per segment (train_step.PRESETS): the release's 480x832x81, the paper's 384x672x77.
_DRY = dict(train_step.PRESETS["tiny"], width=16)  # latents a multiple of 4: cam_downsample=2
TRAIN = {
    "full": {"480": train_step.PRESETS["1.3b"], "384": train_step.PRESETS["paper"]},
    "dry": {"480": _DRY, "384": _DRY},  # one tiny program: the compile cache serves the second
}
# Sampling problems (sample.CONFIGS shapes): video frames x height x width; "dry" with a small VAE.
SAMPLE = {"full": sample.CONFIGS["1.3b"],
          "dry": dict(sample.CONFIGS["tiny"], frames=1, vae=dict(base_dim=4, num_res_blocks=1))}
# Remat policies tried in order at full size; the first whose compiled buffers fit the device.
REMATS = ("dots_no_batch", "full")
FIT = 0.92  # of the device's memory limit: headroom for the allocator
REPEATS = {"full": 2, "dry": 1}  # timed steps after the warm-up
COST_OPTIONS = {"full": tuple(cost_cutting.OPTIONS), "dry": ("baseline (release)",)}
CUDNN_PIN = 91200  # cuDNN 9.12: the CUDA 13 plugin's minimum, when no libcudnn is at hand


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def compute(size: str) -> tuple[str, str]:
    """(dtype, attention) of a size: bf16 + cuDNN on the GPU, float32 + "auto" on the CPU."""
    return ("bfloat16", "cudnn") if size == "full" else ("float32", "auto")


def device_name() -> str:
    return jax.devices()[0].device_kind


def tokens(p: dict) -> int:
    """Tokens the DiT runs: three segments of frames x (h/2) x (w/2)."""
    return 3 * p["frames"] * (p["height"] // 2) * (p["width"] // 2)


# ---------------------------------------------------------------------------- training step
def train_config(p: dict, dtype: str, attention: str, remat: str = "none") -> models.DiTConfig:
    """The T2V-shaped Wan DiT of a train_step preset (the shape both frameworks build)."""
    return models.DiTConfig(dim=p["dim"], ffn_dim=p["ffn"], num_layers=p["layers"],
                            num_heads=p["dim"] // p["head_dim"], text_dim=p["text_dim"],
                            dtype=dtype, attention=attention, remat=remat)


def train_inputs(p: dict, cfg: models.DiTConfig, abstract: bool = False):
    """(params, target, camera ref, content ref, text): random arrays, or ShapeDtypeStructs."""
    seg = (1, p["frames"], p["height"], p["width"], cfg.in_channels)  # [b, f, h, w, C]
    text = (1, p["text_len"], p["text_dim"])  # [b, L, D]
    if abstract:
        sds = lambda s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
        shapes = models.param_shapes(dataclasses.replace(cfg, attention="xla"))  # any device
        params = jax.tree_util.tree_map(lambda s: sds(s.shape), shapes)
        return params, sds(seg), sds(seg), sds(seg), sds(text)
    rng = np.random.default_rng(0)
    lat, cam, cont = (rng.standard_normal(seg).astype(np.float32) for _ in range(3))
    return (sample.random_params(cfg, "float32", rng), lat, cam, cont,
            rng.standard_normal(text).astype(np.float32))


def memory_limit() -> int | None:
    """The device allocator's limit in bytes (GPU), or None (CPU: no limit reported)."""
    return (jax.devices()[0].memory_stats() or {}).get("bytes_limit")


def saved_lower_bound(p: dict, cfg: models.DiTConfig, remat: str) -> int:
    """Bytes a remat policy keeps for the backward pass at least: the "dots" policies keep every
    layer's q, k, v, o and FFN matmul outputs (more, in truth); "full" keeps layer inputs only."""
    if not remat.startswith("dots"):
        return 0
    per_token = 4 * cfg.dim + cfg.ffn_dim + cfg.dim  # q, k, v, o; FFN hidden and output
    return tokens(p) * cfg.num_layers * per_token * jnp.dtype(cfg.dtype).itemsize


def pick_remat(p: dict, cfg: models.DiTConfig, remats) -> tuple[str, object, dict]:
    """Compiles the step for each remat policy in order (abstract arguments, nothing
    allocated); returns the first that fits the device, its executable and what was tried. A
    policy whose lower bound alone exceeds the device is skipped without compiling."""
    limit, tried = memory_limit(), {}
    for remat in remats:
        bound = saved_lower_bound(p, cfg, remat)
        if limit is not None and bound > FIT * limit:
            tried[remat] = {"skipped": f"keeps >= {bound / 2**30:.0f} GiB of activations"}
            continue
        jitted, args = train_step.our_step(dataclasses.replace(cfg, remat=remat),
                                           *train_inputs(p, cfg, abstract=True))
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        need = train_step.planned_bytes(compiled)
        tried[remat] = {"planned_bytes": need, "compile_s": time.perf_counter() - t0}
        if limit is None or need is None or need <= FIT * limit:
            return remat, compiled, tried
    raise RuntimeError(f"no remat policy fits {limit / 2**30:.1f} GiB: {tried}")


def train_ours(size: str, res: str) -> dict:
    """Our CamClone training step: seconds, tokens/s, FLOPs, MFU, peak memory."""
    p = TRAIN[size][res]
    dtype, attention = compute(size)
    cfg = train_config(p, dtype, attention)
    remat, compiled, tried = pick_remat(p, cfg, REMATS if size == "full" else ("none",))
    inputs = train_inputs(p, cfg)
    _, args = train_step.our_step(dataclasses.replace(cfg, remat=remat), *inputs)
    box = {"args": args}

    def run():
        state, metrics = compiled(*box["args"])
        box["args"] = (state,) + box["args"][1:]
        jax.block_until_ready(metrics["loss"])

    seconds = _alternate([("ours", run)], REPEATS[size])["ours"]
    flops = train_step.model_flops(cfg, *inputs)
    n = tokens(p)
    stats = jax.devices()[0].memory_stats() or {}
    return {"framework": "jax", "device": device_name(), "tokens": n, "dtype": dtype,
            "attention": models.attention.resolve_backend(attention, dtype), "remat": remat,
            "remat_tried": tried, "s_per_step": seconds, "tokens_per_s": n / seconds,
            "flops_per_step": flops, "peak_flops": observe.peak_flops(),
            "mfu": observe.mfu(flops, seconds, observe.peak_flops()),
            "peak_bytes": stats.get("peak_bytes_in_use", train_step.planned_bytes(compiled))}


def train_pytorch(size: str, res: str) -> dict:
    """The diffusers step (SDPA attention, AdamW over the self-attention subset)."""
    p = TRAIN[size][res]
    dtype, _ = compute(size)
    cfg = train_config(p, dtype, "auto")
    _, lat, cam, cont, text = train_inputs(p, cfg, abstract=True)
    rng = np.random.default_rng(0)
    lat, cam, cont, text = (rng.standard_normal(a.shape).astype(np.float32)
                            for a in (lat, cam, cont, text))
    # diffusers: heavy and optional (the carried wheels bring it); the CUDA lowering needs none
    from diffusers import WanTransformer3DModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # random weights made on the device: no 5 GB host copy
        peer = WanTransformer3DModel(**cfg.to_diffusers())
    remat = "full" if size == "full" else "none"
    run = train_step.theirs(types.SimpleNamespace(dtype=dtype, remat=remat), peer, lat, cam,
                            cont, text)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = _alternate([("pytorch", run)], REPEATS[size])["pytorch"]
    n = tokens(p)
    return {"framework": "pytorch", "device": _torch_device(), "tokens": n, "dtype": dtype,
            "attention": "sdpa", "remat": remat, "s_per_step": seconds,
            "tokens_per_s": n / seconds, "peak_bytes": _torch_peak()}


def _torch_device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _torch_peak() -> float:
    if torch.cuda.is_available():
        return float(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


# ---------------------------------------------------------------------------------- sampling
def sample_step(size: str, framework: str) -> dict:
    """One guided sampling step (the CFG pair) at 480x832x81: ours batched, or diffusers'."""
    c = SAMPLE[size]
    worker = sample.jax_worker if framework == "jax" else sample.torch_worker
    return {"framework": framework, "tokens": sample.tokens(c), **worker(c, 1)}


def sample_whole(size: str, batched: bool, steps: int) -> dict:
    """A whole sample (reference encodes, ``steps`` denoising steps, tiled VAE decode)."""
    c = SAMPLE[size]
    return {"framework": "jax", "tokens": sample.tokens(c), **sample.pipeline_worker(c, steps,
                                                                                      batched)}


# ------------------------------------------------------------------------------- cost cutting
def cost_cut(size: str) -> dict:
    """The cost-cutting options at 1.3B, 480x832x81 (benchmarks/cost_cutting.py)."""
    p = TRAIN[size]["480"]
    dtype, attention = compute(size)
    cfg = train_config(p, dtype, attention, remat="full" if size == "full" else "none")
    params, *inputs = train_inputs(p, cfg)
    inputs = tuple(jnp.asarray(a) for a in inputs)
    options = {name: cost_cutting.Option(cfg.replace(**cost_cutting.OPTIONS[name]), params,
                                         inputs) for name in COST_OPTIONS[size]}
    times = cost_cutting.measure(options, REPEATS[size])
    base = COST_OPTIONS[size][0]
    return {"device": device_name(), "tokens": tokens(p), "dtype": dtype,
            "table": cost_cutting.table(options, times, base),
            "options": {name: {"train_tokens": o.train_tokens, "train_flops": o.train_flops,
                               "step_tokens": o.step_tokens, "step_flops": o.step_flops,
                               "seconds": times[name]} for name, o in options.items()}}


def run_item(item: str, size: str, steps: int) -> dict:
    """One suite item by name (gpu_suite.ITEMS, or "lower_cuda": always at full size)."""
    if item.startswith("train_"):
        _, res, framework = item.split("_")
        return (train_ours if framework == "ours" else train_pytorch)(size, res)
    if item.startswith("sample_step_"):
        return sample_step(size, "jax" if item.endswith("ours") else "torch")
    if item.startswith("sample_480_"):
        return sample_whole(size, item.endswith("batched"), steps)
    if item == "cost_cutting":
        return cost_cut(size)
    if item == "lower_cuda":
        return lower_for_cuda()
    raise ValueError(f"unknown item {item!r}")


# ------------------------------------------------------------------------------ CUDA lowering
def cudnn_version() -> tuple[int, str]:
    """(cuDNN version the lowering sees, where it came from). Off a GPU machine the CUDA
    plugin answers only if the cuDNN library can be loaded (a 517 MB wheel); otherwise the
    version is pinned to the plugin's minimum. It only gates features at trace time."""
    if PRIVATE_JAX:
        raise RuntimeError(f"jax {jax.__version__} moved the cuDNN attention module: {PRIVATE_JAX}")
    if cuda_versions is None:
        reason = "no jax CUDA plugin (jax_cuda13_plugin / jax_cuda12_plugin) importable"
    else:
        try:
            return int(cuda_versions.cudnn_get_version()), "the cuDNN library"
        except RuntimeError as e:
            reason = f"the CUDA plugin found no cuDNN library ({e})"
    cudnn_attention.check_cudnn_version = lambda: CUDNN_PIN
    return CUDNN_PIN, f"pinned to {CUDNN_PIN}: {reason}"


def _lowered_report(lowered, seconds: float) -> dict:
    text = lowered.as_text()
    calls = sorted(set(re.findall(r"custom_call @([\w$.\-]+)", text)))
    return {"seconds": seconds, "stablehlo_chars": len(text), "custom_calls": calls}


def lower_for_cuda() -> dict:
    """Lowers the full-size 1.3B training step (both resolutions) and the guided sampling step
    for CUDA from abstract shapes, cuDNN attention and the GPU remat included; also exports the
    480x832x81 step with ``jax.export`` (platform "cuda")."""
    version, source = cudnn_version()
    out = {"jax": jax.__version__, "backend_here": jax.default_backend(),
           "cuda_plugin": None if cuda_versions is None else cuda_versions.__name__,
           "cudnn_version": version, "cudnn_source": source}
    for res, p in TRAIN["full"].items():
        cfg = train_config(p, "bfloat16", "cudnn", remat="full")
        jitted, args = train_step.our_step(cfg, *train_inputs(p, cfg, abstract=True))
        t0 = time.perf_counter()
        lowered = jitted.trace(*args).lower(lowering_platforms=("cuda",))
        out[f"train_{res}"] = {"tokens": tokens(p),
                               **_lowered_report(lowered, time.perf_counter() - t0)}
        if res == "480":
            out["export_train_480"] = _export(jitted, args)
    cfg, params, cond, noise, tables = sample._jax_problem(SAMPLE["full"], 1, "bfloat16",
                                                           shapes_only=True, attention="cudnn")
    t0 = time.perf_counter()
    lowered = denoise.denoise.trace(
        params, cond, noise, tables, jax.ShapeDtypeStruct((), jnp.float32), None, cfg=cfg,
        solver="euler", order=2, guided=True).lower(lowering_platforms=("cuda",))
    out["sample_step"] = {"tokens": sample.tokens(SAMPLE["full"]),
                          **_lowered_report(lowered, time.perf_counter() - t0)}
    return out


def _export(jitted, args) -> dict:
    """``jax.export`` for "cuda": refused for cuDNN's custom calls (no compatibility guarantee)
    unless that check is disabled; both outcomes are reported."""
    try:
        jax.export.export(jitted, platforms=("cuda",))(*args)
        refused = None
    except ValueError as e:
        refused = str(e).splitlines()[0]
    checks = [jax.export.DisabledSafetyCheck.custom_call(name)
              for name in ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")]
    exported = jax.export.export(jitted, platforms=("cuda",), disabled_checks=checks)(*args)
    return {"refused_without_disabled_checks": refused, "platforms": list(exported.platforms),
            "stablehlo_chars": len(str(exported.mlir_module()))}
