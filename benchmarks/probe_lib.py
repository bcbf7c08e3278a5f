"""Shared machinery of the reference-reading probes (copy_probe.py, shift_probe.py).

A probe trains the project's own DiT (``camclone_jax.models.DiT``) from scratch, all parameters,
on a synthetic task whose references enter as frame-concatenated tokens (``cam_latents`` /
``content_latents``), exactly as CamClone feeds them. Every ``--log_every`` steps it measures the
clean-sample error at a fixed high noise level ``--probe_t`` on a fixed held-out batch, once with
the true references and once per "case" with a reference zeroed. The gap (error with a reference
zeroed minus error with the true references) is what the model has learned to take from that
reference. Each measurement is printed and, with ``--out``, appended as one JSON line.

A task supplies ``make_batch(key, shape) -> (target, cam_ref, content_ref)`` (each
[b, f, h, w, c]) and the cases, a dict ``name -> (zero_cam, zero_content)``.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import optax

from camclone_jax import tasks
from camclone_jax.diffusion import flow
from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import params as params_lib

TEXT_DIM, TEXT_LEN = 32, 8  # a dummy all-zero prompt: the probes carry no text


def add_args(p: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """The options every probe takes; ``defaults`` overrides the probe-specific defaults."""
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=5, help="latent frames per segment")
    p.add_argument("--height", type=int, default=8, help="latent height")
    p.add_argument("--width", type=int, default=14, help="latent width")
    p.add_argument("--channels", type=int, default=48, help="latent channels")
    p.add_argument("--patch", type=int, default=2, help="spatial patch size (tokens are patches)")
    p.add_argument("--dim", type=int, default=128, help="model width")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head_dim", type=int, default=None,
                   help="if given, heads = dim // head_dim (overrides --heads)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=("velocity", "sample"), default="sample",
                   help="flow loss on the velocity, or squared error of the clean sample")
    p.add_argument("--t_sampler", choices=("uniform", "logit_normal"), default="uniform",
                   help="training noise-level distribution")
    p.add_argument("--t_min", type=float, default=0.0,
                   help="training noise levels are squeezed into [t_min, 1] (0: the sampler's)")
    p.add_argument("--i2v", action="store_true",
                   help="the target's frame 0 enters as the I2V first-frame channels (mask + "
                        "latent), as CamClone's I2V task feeds it")
    p.add_argument("--probe_t", type=float, default=0.95, help="noise level of the measurement")
    p.add_argument("--probe_batch", type=int, default=32, help="held-out examples measured")
    p.add_argument("--seed", type=int, default=0, help="model init and training-data seed")
    p.add_argument("--log_every", type=int, default=250)
    p.add_argument("--out", default=None, help="append the measurements here as JSON lines")
    p.set_defaults(**defaults)
    return p


def num_heads(args) -> int:
    """Heads from --head_dim when given, else --heads."""
    if args.head_dim:
        if args.dim % args.head_dim:
            raise ValueError(f"--dim {args.dim} is not a multiple of --head_dim {args.head_dim}")
        return args.dim // args.head_dim
    return args.heads


def model_config(args) -> DiTConfig:
    """A frame-concat CamClone DiT of the probe's size, T2V (no first-frame mask channels)."""
    c = args.channels
    return DiTConfig(dim=args.dim, ffn_dim=4 * args.dim, num_layers=args.layers,
                     num_heads=num_heads(args), in_channels=2 * c + 4, out_channels=c,
                     text_dim=TEXT_DIM, freq_dim=64, patch_size=(1, args.patch, args.patch),
                     prediction="sample")


def segment_tokens(args) -> int:
    """Tokens in one segment (target, camera reference or content reference)."""
    return args.frames * (args.height // args.patch) * (args.width // args.patch)


def first_frame_channels(x, cfg: DiTConfig, i2v: bool):
    """The first-frame channels [b, f, h, w, cond_channels] of targets x [b, f, h, w, c]: with
    ``i2v`` the target's frame 0 as the I2V condition (through the conditioning contract,
    ``tasks.dit_inputs``), without, all zeros (T2V)."""
    if not i2v:
        return jnp.zeros(x.shape[:-1] + (cfg.cond_channels,))  # [b, f, h, w, cc]
    image = x.at[:, 1:].set(0.0)  # [b, f, h, w, c] latents of [first frame, zeros...]
    return tasks.dit_inputs(cfg, task="i2v", cam_latents=x, image_latents=image)["first_frame"]


def make_loss(model: DiT, cfg: DiTConfig, i2v: bool = False):
    """loss(params, x, z, t, cam, content, kind) for targets x [b, f, h, w, c]: the flow loss on
    the velocity ("velocity") or the mean squared clean-sample error ("sample"). With ``i2v`` the
    target's frame 0 is given as first-frame channels, and the clean-sample error counts the
    later frames only (frame 0 is known)."""

    def loss(p, x, z, t, cam, content, kind):
        first_frame = first_frame_channels(x, cfg, i2v)  # [b, f, h, w, cc]
        text = jnp.zeros((x.shape[0], TEXT_LEN, TEXT_DIM))  # [b, L, text_dim]
        xt = flow.add_noise(x, z, t)  # [b, f, h, w, c]
        v = model.apply({"params": p}, xt, flow.model_timesteps(t), text, cam_latents=cam,
                        content_latents=content, first_frame=first_frame)  # [b, f, h, w, c]
        if kind == "velocity":
            return flow.flow_loss(v, x, z)
        x_hat = xt - jnp.maximum(t, 0.05)[:, None, None, None, None] * v  # clean sample
        if i2v:
            return jnp.mean((x_hat - x)[:, 1:] ** 2)
        return jnp.mean((x_hat - x) ** 2)

    return loss


def probe_key(seed: int):
    """The key of the held-out measurement batch (apart from every training key)."""
    return jax.random.key(10_000 + seed)


def _refs(cam, content, zero_cam: bool, zero_content: bool):
    """The references of one measurement case, zeroed as asked."""
    return (jnp.zeros_like(cam) if zero_cam else cam,
            jnp.zeros_like(content) if zero_content else content)


def train_probe(args, make_batch, cases: dict, header: dict | None = None,
                measure_batch=None) -> list[dict]:
    """Trains the probe's DiT on ``make_batch`` for ``args.steps`` steps and returns the list of
    measurement records (also printed, and appended to ``args.out`` as JSON lines).

    The header record gives the probe batch's variance (the error of predicting zeros) and
    copy_content_err, the error of predicting the content reference itself.
    Each record: step, loss (of that step's batch), err (clean-sample error at probe_t with the
    true references, "with_refs", and per case), gap (per case: err[case] - err["with_refs"]),
    elapsed_s and steps_per_s (wall time since the first step finished compiling).
    ``measure_batch`` (default ``make_batch``) draws the held-out measurement batch.
    """
    shape = (args.batch, args.frames, args.height, args.width, args.channels)
    probe_shape = (args.probe_batch,) + shape[1:]
    cfg = model_config(args)
    model, params = DiT(cfg), params_lib.init_params(cfg, args.seed)
    tx = optax.adam(args.lr)
    opt = tx.init(params)
    loss = make_loss(model, cfg, getattr(args, "i2v", False))

    @jax.jit
    def step(p, o, key):
        kb, kz, kt = jax.random.split(key, 3)
        x, cam, content = make_batch(kb, shape)  # [b, f, h, w, c] each
        z = jax.random.normal(kz, shape)  # [b, f, h, w, c]
        t, _ = flow.sample_timesteps(kt, shape[0], args.t_sampler)  # [b]
        t = args.t_min + (1.0 - args.t_min) * t  # [b] in [t_min, 1]
        value, grads = jax.value_and_grad(loss)(p, x, z, t, cam, content, args.loss)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    kb, kz = jax.random.split(probe_key(args.seed))  # held out from the training keys
    px, pcam, pcontent = (measure_batch or make_batch)(kb, probe_shape)  # [B, f, h, w, c] each
    pz = jax.random.normal(kz, probe_shape)
    pt = jnp.full((args.probe_batch,), args.probe_t)

    @jax.jit
    def clean_error(p, cam, content):  # one compiled forward pass, reused by every case
        return loss(p, px, pz, pt, cam, content, "sample")

    def measure(p):
        out = {"with_refs": clean_error(p, pcam, pcontent)}
        for name, (zero_cam, zero_content) in cases.items():
            out[name] = clean_error(p, *_refs(pcam, pcontent, zero_cam, zero_content))
        return out

    info = {"tokens_per_segment": segment_tokens(args), "heads": cfg.num_heads,
            "head_dim": cfg.head_dim, "data_var": float(jnp.var(px)),
            "copy_content_err": float(jnp.mean((pcontent - px) ** 2)),
            **(header or {}), "args": vars(args)}
    _emit(args.out, {"header": info})
    key = jax.random.key(args.seed)
    records, start = [], None
    for i in range(args.steps + 1):
        key, sub = jax.random.split(key)
        params, opt, value = step(params, opt, sub)
        if start is None:
            value.block_until_ready()
            start = time.time()  # timing starts after compilation and the first step
        if i % args.log_every == 0 or i == args.steps:
            err = {k: float(v) for k, v in measure(params).items()}
            elapsed = time.time() - start
            rec = {"step": i, "loss": float(value), "err": err,
                   "gap": {k: err[k] - err["with_refs"] for k in cases},
                   "elapsed_s": round(elapsed, 1),
                   "steps_per_s": round(i / elapsed, 2) if i and elapsed > 0 else None}
            records.append(rec)
            _emit(args.out, rec)
    return records


def _emit(path: str | None, record: dict):
    """Prints a record as one JSON line and appends it to ``path`` if given."""
    line = json.dumps(record)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
