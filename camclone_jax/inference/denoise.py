"""The jitted sampling loop of CamClone inference: the DiT's velocity (with classifier-free
guidance, or over a cached condition K/V for block-sparse condition attention) stepped by
``diffusion.sampler.sample_loop`` as one compiled program.

  latents = denoise(params, cond, noise, tables, scale, replacement, cfg=dit_cfg,
                    solver="euler", order=2, guided=True, batched=True,
                    progress=None, on_trace=None)

``cond``: text [1, L, D] (and neg_text when guided), cam / content latents [1, f, h, w, C],
optional image [1, 257, d] and first_frame [1, f, h, w, 4 + C]. ``progress(steps_done)`` runs
on the host after every step (a callback inside the loop); ``on_trace()`` runs whenever the
loop is traced. Both are static arguments: pass the same callables (e.g. one object's bound
methods) on every call, or the loop is traced again.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from camclone_jax import sharding
from camclone_jax.diffusion import sampler
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.dit import DiT

@functools.partial(jax.jit, static_argnames=("cfg", "solver", "order", "guided", "batched",
                                             "progress", "on_trace"))
def denoise(params, cond, noise, tables, scale, replacement, *, cfg: DiTConfig, solver: str,
            order: int, guided: bool, batched: bool = True,
            progress: Callable[[int], None] | None = None,
            on_trace: Callable[[], None] | None = None):
    """The whole sampling loop as one program (see sampler.sample_loop).

    With block-sparse condition attention (``cfg.cond_attention`` "joint"/"segment") the
    condition tokens' keys/values are built once, before the loop, and every step runs the
    target tokens only (``cached_velocity``).
    """
    if on_trace is not None:
        on_trace()
    model = DiT(cfg)
    if cfg.cond_attention != "full":
        velocity = cached_velocity(model, params, cond, scale, guided=guided, batched=batched)
        return sampler.sample_loop(velocity, noise, tables, solver=solver, order=order,
                                   replacement=replacement, progress=progress)

    def model_fn(x, timestep, ctx):
        n = x.shape[0]
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            return model.apply({"params": params}, x, jnp.full((n,), timestep), ctx["text"],
                               cam_latents=ctx["cam"], content_latents=ctx["content"],
                               image_embeds=ctx.get("image"), first_frame=ctx.get("first_frame"))

    def velocity(x, timestep, sigma):
        shared = {k: v for k, v in cond.items() if k not in ("text", "neg_text")}
        pos = dict(shared, text=cond["text"])
        neg = dict(shared, text=cond["neg_text"]) if guided else None
        return sampler.guided_velocity(model_fn, x, timestep, pos, neg, scale, batched=batched)

    return sampler.sample_loop(velocity, noise, tables, solver=solver, order=order,
                               replacement=replacement, progress=progress)


def cached_velocity(model: DiT, params, cond: dict, scale, *, guided: bool, batched: bool):
    """velocity(x, timestep, sigma) over a condition K/V cache built here, once per sample.

    Condition tokens see only condition tokens, timestep 0 and the prompt, so one cache per
    prompt (the guided pair: two, batched as one cache of 2 when ``batched``) serves every
    step; per step the DiT runs the target tokens against [target K/V | cached K/V]. Guidance
    is combined as in ``sampler.guided_velocity``, with the batched inputs joined once here
    rather than at every step.
    """
    def apply(*args, **kwargs):
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            return model.apply({"params": params}, *args, **kwargs)

    texts = [cond["text"]] + ([cond["neg_text"]] if guided else [])  # [n, L, D] each
    groups = [texts] if batched else [[t] for t in texts]  # texts joined into one call each
    calls = []
    for group in groups:
        rep = lambda a, r=len(group): a if r == 1 else jnp.concatenate([a] * r)  # [r n, ...]
        ctx = {"text": jnp.concatenate(group) if len(group) > 1 else group[0],
               "image": None if "image" not in cond else rep(cond["image"]),
               "first_frame": None if "first_frame" not in cond else rep(cond["first_frame"])}
        ctx["cache"] = apply(ctx["text"], rep(cond["cam"]), rep(cond["content"]),
                             image_embeds=ctx["image"],
                             method=DiT.build_cond_cache)  # {"k", "v"}: [r n, layers, Lc, dim]
        calls.append((len(group), ctx))

    def velocity(x, timestep, sigma):
        outs = []
        for r, ctx in calls:
            xr = x if r == 1 else jnp.concatenate([x] * r)  # [r n, f, h, w, C]
            outs.append(apply(xr, jnp.full((xr.shape[0],), timestep), ctx["text"],
                              image_embeds=ctx["image"], first_frame=ctx["first_frame"],
                              cond_cache=ctx["cache"]))
        v = outs[0] if len(outs) == 1 else jnp.concatenate(outs)  # [(1 or 2) n, ...]
        if not guided:
            return v
        n = x.shape[0]
        return sampler.cfg_combine(v[:n], v[n:], scale)

    return velocity
