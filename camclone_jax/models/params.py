"""The DiT's params: initialisation to a plain pytree, shapes without memory, logical specs;
and Wan I2V's first-frame condition channels.

Params are always plain nested dicts of arrays (no Flax boxes): the optimizer masks, the weight
converters and orbax all key on their paths. The logical axis names live beside them, in
``logical_specs(config)``, for sharding. The generic helpers are in models/base.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from camclone_jax.models.base import init_plain, shapes_plain, specs_plain
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.dit import DiT


def _dummy_inputs(cfg: DiTConfig):
    """Smallest inputs that build every parameter of the model."""
    pt, ph, pw = cfg.patch_size
    latents = jnp.zeros((1, pt, ph, pw, cfg.out_channels), jnp.float32)
    kwargs = {}
    if cfg.cond_channels:
        kwargs["first_frame"] = jnp.zeros((1, pt, ph, pw, cfg.cond_channels), jnp.float32)
    if cfg.image_dim is not None:
        kwargs["image_embeds"] = jnp.zeros((1, 1, cfg.image_dim), jnp.float32)
    return (latents, jnp.zeros((1,), jnp.float32), jnp.zeros((1, 1, cfg.text_dim))), kwargs


def _init_boxed(cfg: DiTConfig, rng):
    args, kwargs = _dummy_inputs(cfg)
    return DiT(cfg).init(rng, *args, **kwargs)["params"]


def init_params(config: DiTConfig, rng: jax.Array | int = 0) -> dict:
    """Randomly initialised DiT params as a plain nested dict."""
    return init_plain(_init_boxed, config, rng)


def param_shapes(config: DiTConfig) -> dict:
    """DiT param shapes without allocating them."""
    return shapes_plain(_init_boxed, config)


def logical_specs(config: DiTConfig) -> dict:
    """Logical axis names of every DiT param."""
    return specs_plain(_init_boxed, config)


def count_params(tree) -> int:
    """Number of scalars in a params (or shapes) tree."""
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def first_frame_condition(image_latents: jnp.ndarray) -> jnp.ndarray:
    """Wan I2V condition channels from the VAE latent of [first frame, zeros...].

    Args:
      image_latents: [b, f, h, w, c] normalised latents of the video whose first frame is the
        conditioning image and whose other frames are zeros (as Wan I2V encodes it).
    Returns:
      [b, f, h, w, 4 + c]: a 4-channel mask (ones on latent frame 0, zeros after) then the
      latents, the channel order Wan I2V concatenates after the noisy latent.
    """
    b, f, h, w, _ = image_latents.shape
    mask = jnp.zeros((b, f, h, w, 4), image_latents.dtype).at[:, 0].set(1.0)  # [b, f, h, w, 4]
    return jnp.concatenate([mask, image_latents], axis=-1)
