"""Demo: the CamClone DiT forward pass and 3D-attention-only gradient steps, on any device.

  python -m camclone_jax.demo --config=configs/demo.py [--config.key=value ...]

Until the training loop lands this is what the README's first command runs: it builds the
model from the config, frame-concatenates a target with camera and content references (half
the batch I2V, i.e. zero content), runs the forward pass and a few Adam steps on the
``self_attn`` parameters only (everything else frozen), and prints shapes, parameter counts,
timings and the loss. ``run(config)`` is the library entry (notebooks call it).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from camclone_jax import models
from camclone_jax.convert.io import flatten_params, unflatten_params


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Wan VAE latent grid of a video: 4x temporal (1 + 4k frames), 8x spatial."""
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise ValueError(f"video {frames}x{height}x{width}: frames must be 1 + 4k and height, "
                         "width multiples of 16")
    return 1 + (frames - 1) // 4, height // 8, width // 8


def split_trainable(params, pattern: str = "self_attn"):
    """(trainable, frozen) flat dicts: paths containing ``pattern`` train."""
    flat = flatten_params(params)
    trainable = {k: v for k, v in flat.items() if pattern in k}
    return trainable, {k: v for k, v in flat.items() if pattern not in k}


def run(config) -> dict:
    """Runs the demo described by an ml_collections config; returns the measurements."""
    cfg = models.DiTConfig.from_dict(dict(config.model))
    f, h, w = latent_shape(config.shape.frames, config.shape.height, config.shape.width)
    b = config.batch_size
    keys = jax.random.split(jax.random.PRNGKey(config.seed), 6)
    lat_shape = (b, f, h, w, cfg.out_channels)
    clean, cam, content, noise = (jax.random.normal(k, lat_shape) for k in keys[:4])
    content = content.at[: b // 2].set(0.0)  # the first half of the batch is I2V
    text = jax.random.normal(keys[4], (b, config.shape.text_len, cfg.text_dim))
    extra = {}
    if cfg.image_dim is not None:
        extra["image_embeds"] = jax.random.normal(keys[5], (b, config.shape.image_len, cfg.image_dim))
    if cfg.cond_channels:  # I2V base: mask + latent of [first frame, zeros...]
        image_latents = jnp.zeros_like(clean).at[:, 0].set(clean[:, 0])  # [b, f, h, w, c]
        extra["first_frame"] = models.first_frame_condition(image_latents)
    model = models.DiT(cfg)

    t0 = time.perf_counter()
    params = models.init_params(cfg, keys[5])
    init_s = time.perf_counter() - t0
    trainable, frozen = split_trainable(params)

    def loss_fn(train, t):
        p = unflatten_params({**frozen, **train})
        x_t = (1 - t)[:, None, None, None, None] * clean + t[:, None, None, None, None] * noise
        v = model.apply({"params": p}, x_t, t * 1000.0, text, cam_latents=cam,
                        content_latents=content, **extra)
        return jnp.mean(jnp.square(v - (noise - clean)))

    opt = optax.adam(1e-3)

    @jax.jit
    def step(train, opt_state, t):
        loss, grads = jax.value_and_grad(loss_fn)(train, t)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(train, updates), opt_state, loss

    forward = jax.jit(lambda train, t: loss_fn(train, t))
    t = jnp.full((b,), 0.5)
    t0 = time.perf_counter()
    forward(trainable, t).block_until_ready()
    fwd_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    forward(trainable, t).block_until_ready()
    fwd_s = time.perf_counter() - t0

    opt_state = opt.init(trainable)
    losses, step_times = [], []
    for _ in range(config.steps):
        t0 = time.perf_counter()
        trainable, opt_state, loss = step(trainable, opt_state, t)
        losses.append(float(loss))
        step_times.append(time.perf_counter() - t0)

    n_all = models.count_params(params)
    n_train = sum(x.size for x in trainable.values())
    tokens = 3 * f * h * w // (cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2])
    return dict(device=str(jax.devices()[0].platform), latent_shape=lat_shape,
                tokens_per_sample=tokens, params=n_all, trainable_params=n_train,
                output_shape=tuple(jax.eval_shape(  # shape only: no second forward pass
                    lambda p: model.apply({"params": p}, clean, t * 1000, text, cam_latents=cam,
                                          content_latents=content, **extra), params).shape),
                init_s=init_s, forward_compile_s=fwd_compile, forward_s=fwd_s,
                step_compile_s=step_times[0], step_s=min(step_times[1:] or step_times),
                losses=losses)


def report(result: dict) -> str:
    """A readable summary of ``run``'s result."""
    lines = [
        f"device                 {result['device']}",
        f"latents (b,f,h,w,c)    {result['latent_shape']}  x3 segments (target|camera|content)",
        f"tokens per sample      {result['tokens_per_sample']:,}",
        f"prediction shape       {result['output_shape']}",
        f"parameters             {result['params']:,} ({result['trainable_params']:,} trainable: self_attn)",
        f"init                   {result['init_s']:.2f} s",
        f"forward                {result['forward_s'] * 1e3:.1f} ms (compile {result['forward_compile_s']:.1f} s)",
        f"train step (fwd+bwd)   {result['step_s'] * 1e3:.1f} ms (first, with compile {result['step_compile_s']:.1f} s)",
        "loss per step          " + " ".join(f"{x:.4f}" for x in result["losses"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file(
        "config", "configs/demo.py", "ml_collections config file (configs/*.py[:arg])",
        lock_config=True)
    app.run(lambda argv: print(report(run(_CONFIG.value))))
