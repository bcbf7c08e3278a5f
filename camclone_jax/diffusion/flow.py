"""Rectified flow (paper eq. 1-2): noising, timestep sampling, loss weighting, the loss.

  x_t = (1 - t) x + t z,   z ~ N(0, I),   target velocity v* = z - x,
  loss = || v_theta(x_t, t, c) - (z - x) ||^2 on the target latents only.

t lives in [0, 1] (1 = pure noise); the DiT takes ``1000 * t`` (Wan's scale), see
``model_timesteps``. Timestep sampling: "uniform", "logit_normal" (SD3), "shifted": a uniform
u mapped through the flow-matching shift sigma(u) = s u / (1 + (s - 1) u), s = 5 in the public
release, or "floor": t uniform in [t_min, 1] except a fraction t_full uniform in [0, 1] (the
tiny clone models' recipe: the references matter most at high noise, and every sampler step is
still trained). The release's optional bell-shaped weighting, w(u) proportional to
exp(-2 (u - 1/2)^2) minus its minimum and normalised to mean 1 over the 1000-step grid, is a
function of the schedule position u (not of the shifted t).

Losses (``example_losses``, per example): "velocity", the flow loss above, or "sample", the
clean-sample error || x_hat - x ||^2 with x_hat = x_t - max(t, 0.05) v (what a DiT with
``prediction="sample"`` predicts, read back from its velocity output), optionally on the frames
after the first only (the first frame is given in I2V).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.dit import SAMPLE_T_FLOOR

SAMPLERS = ("uniform", "logit_normal", "shifted", "floor")
LOSSES = ("velocity", "sample")


def shift_sigma(u, shift: float):
    """Flow-matching timestep shift: sigma(u) = s u / (1 + (s - 1) u)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def unshift_sigma(t, shift: float):
    """Inverse of ``shift_sigma``."""
    return t / (shift - (shift - 1.0) * t)


def sample_timesteps(rng, batch: int, method: str = "shifted", *, shift: float = 5.0,
                     logit_mean: float = 0.0, logit_std: float = 1.0, t_min: float = 0.5,
                     t_full: float = 0.25, eps: float = 1e-3):
    """Draws t [batch] in [eps, 1 - eps] by the named rule; returns (t, u) with u the position."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown timestep sampler {method!r}; choose from {SAMPLERS}")
    if method == "floor":
        k_u, k_full = jax.random.split(rng)
        u = jax.random.uniform(k_u, (batch,), minval=eps, maxval=1.0 - eps)  # [batch]
        full = jax.random.uniform(k_full, (batch,)) < t_full  # [batch] anywhere in [0, 1]
        return jnp.where(full, u, t_min + (1.0 - t_min) * u), u
    if method == "logit_normal":
        t = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(rng, (batch,)))
        t = jnp.clip(t, eps, 1.0 - eps)
        return t, t
    u = jax.random.uniform(rng, (batch,), minval=eps, maxval=1.0 - eps)
    return (shift_sigma(u, shift) if method == "shifted" else u), u


def bell_weight(u, num_steps: int = 1000):
    """The release's bell-shaped loss weight at schedule position u in [0, 1]; mean 1 on its grid."""
    grid = np.arange(num_steps) / num_steps
    bell = np.exp(-2.0 * (grid - 0.5) ** 2)
    floor, norm = bell.min(), (bell - bell.min()).mean()
    return (jnp.exp(-2.0 * (u - 0.5) ** 2) - floor) / norm


def add_noise(x, noise, t):
    """x_t = (1 - t) x + t z with t [batch] broadcast over the latent axes."""
    t = t.reshape(t.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
    return (1.0 - t) * x + t * noise


def velocity_target(x, noise):
    """The rectified-flow regression target z - x."""
    return noise - x


def model_timesteps(t):
    """t in [0, 1] -> the DiT's 0-1000 timestep scale."""
    return 1000.0 * t


def flow_loss(v_pred, x, noise, weights=None):
    """Mean squared velocity error per sample, then the (weighted) batch mean.

    v_pred, x, noise: [b, f, h, w, c] target latents only (the DiT already slices off the
    reference segments). weights: optional [b].
    """
    if v_pred.shape != x.shape or noise.shape != x.shape:
        raise ValueError(f"flow_loss shapes differ: v_pred {v_pred.shape}, x {x.shape}, "
                         f"noise {noise.shape}")
    err = jnp.square(v_pred.astype(jnp.float32) - velocity_target(x, noise).astype(jnp.float32))
    per_sample = err.reshape(err.shape[0], -1).mean(-1)  # [b]
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()


def example_losses(v_pred, x_t, x, noise, t, loss: str = "velocity", from_frame: int = 0,
                   weight=None):
    """Per-example loss [b] on the target frames ``from_frame``..: the velocity error to z - x
    ("velocity") or the clean-sample error of x_hat = x_t - max(t, 0.05) v ("sample"), each
    token's error times ``weight`` [b, f, h, w] if given (then still divided by the token
    count, so a weight of ones is the plain loss).

    v_pred, x_t, x, noise: [b, f, h, w, c] target latents; t: [b].
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    if loss == "sample":
        floor = jnp.maximum(t, SAMPLE_T_FLOOR).reshape(t.shape + (1,) * (x.ndim - 1))
        err = x_t.astype(jnp.float32) - floor * v_pred.astype(jnp.float32) - x  # [b, f, h, w, c]
    else:
        err = v_pred.astype(jnp.float32) - velocity_target(x, noise).astype(jnp.float32)
    err = jnp.square(err)  # [b, f, h, w, c]
    if weight is not None:
        err = err * weight[..., None].astype(jnp.float32)  # [b, f, h, w, c]
    err = err[:, from_frame:]  # [b, f - from_frame, h, w, c]
    return err.reshape(err.shape[0], -1).mean(-1)  # [b]
