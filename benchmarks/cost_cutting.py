"""What the condition tokens cost and what the cost-cutting options save: tokens, FLOPs, time.

  python benchmarks/cost_cutting.py              # mid-size config on CPU (as benchmarks/dit.py)
  python benchmarks/cost_cutting.py --layers 2 --frames 3 --height 16 --width 28 --repeats 2

Options (DiTConfig): (a) ``cam_downsample=2``: camera-reference latents pooled 2x2 (4x fewer
camera tokens); (b) ``cond_drop=0.5``: latent drop, half of each reference's tokens removed in
training (sampling keeps them all, so its sampling column is the baseline's); (c)
``cond_attention="joint"`` / ``"segment"``: block-sparse attention, condition tokens attend only
among themselves (joint) or within their own reference (segment) at timestep 0, so sampling
builds their keys/values once and each denoising step runs the target tokens only; and (a)+(b)+
(c) together. The baseline is the release: full attention over all 3 segments.

Per option:
  * training: tokens the DiT runs, XLA FLOPs and measured time of forward+backward (gradients
    of ``self_attn``, the CamClone trainable subset, as benchmarks/dit.py);
  * sampling: tokens per denoising step, FLOPs and measured time of one step's DiT call (batch
    1; classifier-free guidance doubles every option alike); for block-sparse options also the
    one-off condition K/V cache build, per sample, and a whole ``--steps``-step sample.
FLOPs come from ``jax.jit(f).lower(...).cost_analysis()`` of the same functions (lowered, not
compiled: seconds even at 1.3B) with the reference attention ("xla": the exact matmul FLOPs of
attention), the layers unrolled, because XLA's cost analysis counts a loop body once, and no
remat (recomputation is not model work). Times use the configured backend ("auto":
the blockwise flash kernel on CPU), medians of ``--repeats`` runs alternated across options.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax import models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import add_model_args  # noqa: E402  (the shared size flags)
from camclone_jax.models.dit import DiT, sequence_lengths
from camclone_jax.utils import flatten_params, unflatten_params

OPTIONS = {
    "baseline (release)": {},
    "(a) cam_downsample=2": dict(cam_downsample=2),
    "(b) cond_drop=0.5": dict(cond_drop=0.5),
    "(c) cond_attention=joint": dict(cond_attention="joint"),
    "(c) cond_attention=segment": dict(cond_attention="segment"),
    "(a)+(b)+(c) segment": dict(cam_downsample=2, cond_drop=0.5, cond_attention="segment"),
}


def _flops(fn, *args) -> float:
    """FLOPs XLA's cost analysis reports for the lowered ``fn(*args)``."""
    cost = jax.jit(fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


class Option:
    """The jitted training and sampling functions of one option, and their FLOPs."""

    def __init__(self, cfg: models.DiTConfig, params, inputs):
        self.cfg = cfg
        self.sparse = cfg.cond_attention != "full"
        lat, cam, cont, text = inputs
        self.inputs = inputs
        flat = flatten_params(params)
        self.train_params = {k: v for k, v in flat.items() if "self_attn" in k}
        self.frozen = {k: v for k, v in flat.items() if "self_attn" not in k}
        self.params = params
        self.key = jax.random.PRNGKey(0)
        shape = lat.shape
        n_train = sequence_lengths(cfg, shape, train=True)
        n_sample = sequence_lengths(cfg, shape)
        self.train_tokens = sum(n_train.values())
        self.cond_tokens = n_sample["cam"] + n_sample["content"]
        self.step_tokens = n_sample["target"] if self.sparse else sum(n_sample.values())

        count = cfg.replace(attention="xla", scan_layers=False, remat="none")  # FLOP counts
        self.train_fn = jax.jit(jax.grad(self._loss(cfg)))
        self.train_flops = _flops(jax.grad(self._loss(count)), self.train_params, self.frozen,
                                  *inputs, self.key)
        self.step_fn = jax.jit(self._step(cfg))
        if self.sparse:
            self.build_fn = jax.jit(self._build(cfg))
            self.cache = jax.block_until_ready(self.build_fn(params, cam, cont, text))
            self.build_flops = _flops(self._build(count), params, cam, cont, text)
            self.step_flops = _flops(self._step(count), params, lat, text, self.cache)
        else:
            self.cache = None
            self.step_flops = _flops(self._step(count), params, lat, text, cam, cont)

    def _loss(self, cfg):
        def loss(train, frozen, lat, cam, cont, text, key):
            params = unflatten_params({**frozen, **train})
            drop = key if cfg.cond_drop > 0 else None
            v = DiT(cfg).apply({"params": params}, lat, jnp.array([500.0]), text,
                               cam_latents=cam, content_latents=cont, cond_drop_key=drop)
            return jnp.mean(jnp.square(v))
        return loss

    def _step(self, cfg):
        model = DiT(cfg)
        if cfg.cond_attention != "full":
            return lambda params, lat, text, cache: model.apply(
                {"params": params}, lat, jnp.array([500.0]), text, cond_cache=cache)
        return lambda params, lat, text, cam, cont: model.apply(
            {"params": params}, lat, jnp.array([500.0]), text, cam_latents=cam,
            content_latents=cont)

    def _build(self, cfg):
        return lambda params, cam, cont, text: DiT(cfg).apply(
            {"params": params}, text, cam, cont, method=DiT.build_cond_cache)

    def train(self):
        jax.block_until_ready(self.train_fn(self.train_params, self.frozen, *self.inputs,
                                            self.key))

    def sample_step(self):
        lat, cam, cont, text = self.inputs
        if self.sparse:
            jax.block_until_ready(self.step_fn(self.params, lat, text, self.cache))
        else:
            jax.block_until_ready(self.step_fn(self.params, lat, text, cam, cont))

    def build(self):
        lat, cam, cont, text = self.inputs
        jax.block_until_ready(self.build_fn(self.params, cam, cont, text))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(options: dict[str, Option], repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds of each option's timed functions, runs alternated across options."""
    jobs = []
    for name, opt in options.items():
        jobs.append((name, "train", opt.train))
        if opt.cfg.cond_drop == 0 or opt.sparse:  # latent drop alone samples like the baseline
            jobs.append((name, "step", opt.sample_step))
        if opt.sparse:
            jobs.append((name, "build", opt.build))
    for _, _, fn in jobs:
        fn()  # warm-up (compiled already)
    runs: dict = {}
    for _ in range(repeats):
        for name, what, fn in jobs:
            runs.setdefault(name, {}).setdefault(what, []).append(_timed(fn))
    return {name: {k: statistics.median(v) for k, v in d.items()} for name, d in runs.items()}


def table(options: dict[str, Option], times, base: str, steps: int = 50) -> str:
    """The markdown results table (ratios against ``base``); the last column is a whole
    ``steps``-step sample's DiT time (the release samples 50 steps), cache build included."""
    b, bt = options[base], times[base]
    rows = ["| option | train tokens | train GFLOP (x base) | train fwd+bwd s (x base) | "
            "sample tokens/step | step GFLOP (x base) | step s (x base) | cache build, once | "
            f"{steps}-step sample s (x base) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, opt in options.items():
        t = times[name]
        step_s = t.get("step", bt["step"])
        same = "step" not in t
        step_flops = b.step_flops if same else opt.step_flops
        build = (f"{opt.build_flops / 1e9:.1f} GFLOP, {t['build']:.3f} s" if opt.sparse
                 else "-")
        total = steps * step_s + t.get("build", 0.0)  # a whole sample, cache build included
        step_tokens = (f"{opt.step_tokens:,}" + (f" (+{opt.cond_tokens:,} cached K/V)"
                                                 if opt.sparse else ""))
        rows.append(
            f"| {name} | {opt.train_tokens:,} | {opt.train_flops / 1e9:.1f} "
            f"({opt.train_flops / b.train_flops:.2f}x) | {t['train']:.2f} "
            f"({t['train'] / bt['train']:.2f}x) | {step_tokens} | {step_flops / 1e9:.1f} "
            f"({step_flops / b.step_flops:.2f}x) | "
            + ("= baseline (all tokens at sampling)" if same else
               f"{step_s:.3f} ({step_s / bt['step']:.2f}x)") + f" | {build} | "
            f"{total:.1f} ({total / (steps * bt['step']):.2f}x) |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="denoising steps of a sample")
    parser.add_argument("--only", nargs="*", default=None, help="option names to run")
    args = parser.parse_args()

    cfg = models.DiTConfig(dim=args.dim, ffn_dim=args.ffn, num_layers=args.layers,
                           num_heads=args.dim // args.head_dim, text_dim=args.text_dim,
                           attention=args.attention)
    params = models.init_params(cfg, 0)
    rng = np.random.default_rng(0)
    seg = (1, args.frames, args.height, args.width, 16)
    inputs = tuple(jnp.asarray(rng.standard_normal(s).astype(np.float32))
                   for s in (seg, seg, seg, (1, args.text_len, args.text_dim)))
    names = [n for n in OPTIONS if args.only is None or n in args.only or n == next(iter(OPTIONS))]
    print(f"device: {jax.devices()[0].device_kind} (jax {jax.__version__}); config: {args.layers} "
          f"layers, dim {args.dim}, {cfg.num_heads} heads, ffn {args.ffn}, text {args.text_len}x"
          f"{args.text_dim}; 3 segments of {args.frames}x{args.height}x{args.width} latents; "
          f"attention {models.attention.resolve_backend(cfg.attention, cfg.dtype)} "
          f"(FLOPs: xla); {args.repeats} alternated repeats, medians", flush=True)
    options = {}
    for name in names:
        t0 = time.perf_counter()
        options[name] = Option(cfg.replace(**OPTIONS[name]), params, inputs)
        print(f"  built {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    times = measure(options, args.repeats)
    print()
    print(table(options, times, names[0], args.steps))


if __name__ == "__main__":
    main()
