"""The CamClone DiT: Wan 2.1's video transformer with reference videos joined as extra tokens.

Inputs are channels-last latents ``[batch, frames, height, width, channels]``. For CamClone the
camera-reference and content-reference latents (same shape as the target) are appended after the
noisy target along the frame axis, so the 3D self-attention sees [x_t | x_cam | x_cont]; one
timestep modulates every token; the prediction is sliced back to the target frames. With no
references the model is plain Wan 2.1 (T2V, or I2V with ``first_frame`` and ``image_embeds``),
numerically equal to diffusers' ``WanTransformer3DModel``.

Top-level parameter paths: ``patch_embedding/{kernel,bias}`` (kernel [pt, ph, pw, c_in, dim]),
``time_embedding/{fc1,fc2}``, ``time_projection``, ``text_embedding/{fc1,fc2}``,
``img_emb/{norm_in,mlp/fc1,mlp/fc2,norm_out}`` (I2V), ``blocks/...`` (stacked over layers, see
blocks.py), ``head/modulation`` [2, dim] and ``head/proj``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from camclone_jax.models.blocks import ACT, WanBlock
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.layers import MLP, AffineLayerNorm, dense, modulate, sinusoidal_embedding
from camclone_jax.models.rope import rope_tables

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _shape_error(what: str, got, expected: str):
    return ValueError(f"{what} has shape {tuple(got)}, expected {expected}")


def assemble_input(cfg: DiTConfig, latents, cam_latents=None, content_latents=None,
                   first_frame=None):
    """Validates the inputs and joins them into the patch-embedding input.

    Returns (x [b, frames_total, h, w, patch_in_channels], target latent frames).
    """
    if latents.ndim != 5 or latents.shape[-1] != cfg.out_channels:
        raise _shape_error("latents", latents.shape,
                           f"(batch, frames, height, width, {cfg.out_channels})")
    b, f, h, w, _ = latents.shape
    pt, ph, pw = cfg.patch_size
    if f % pt or h % ph or w % pw:
        raise ValueError(f"latents shape {tuple(latents.shape)}: frames, height, width "
                         f"({f}, {h}, {w}) must be divisible by the patch size {cfg.patch_size}")
    if cfg.cond_channels:
        want = (b, f, h, w, cfg.cond_channels)
        if first_frame is None or tuple(first_frame.shape) != want:
            got = None if first_frame is None else tuple(first_frame.shape)
            raise ValueError(f"this I2V model needs first_frame of shape {want} (first-frame mask "
                             f"and latent channels), got {got}")
        target = jnp.concatenate([latents, first_frame.astype(latents.dtype)], -1)  # [b, f, h, w, c_in]
    elif first_frame is not None:
        raise ValueError("first_frame was given but the model has no first-frame channels "
                         f"(in_channels {cfg.in_channels} == out_channels {cfg.out_channels})")
    else:
        target = latents

    if cam_latents is None and content_latents is not None:
        raise ValueError("content_latents needs cam_latents (pass zeros for no camera reference)")
    if cam_latents is None and cfg.concat == "frame":
        return target, f  # plain Wan: no reference segments
    refs = []
    for name, ref in (("cam_latents", cam_latents), ("content_latents", content_latents)):
        if ref is None:
            ref = jnp.zeros_like(latents)  # I2V: all-zero content reference
        if tuple(ref.shape) != tuple(latents.shape):
            raise ValueError(f"{name} shape {tuple(ref.shape)} differs from the target latents "
                             f"shape {tuple(latents.shape)}")
        pad = [(0, 0)] * 4 + [(0, cfg.cond_channels)]
        refs.append(jnp.pad(ref.astype(latents.dtype), pad))  # [b, f, h, w, c_in]
    axis = 1 if cfg.concat == "frame" else -1
    return jnp.concatenate([target, *refs], axis=axis), f


def patchify(x, patch):
    """[b, f, h, w, c] -> ([b, f'*h'*w', pt*ph*pw*c], (f', h', w')), channel fastest."""
    b, f, h, w, c = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [b, f', h', w', pt, ph, pw, c]
    grid = (f // pt, h // ph, w // pw)
    return x.reshape(b, math.prod(grid), pt * ph * pw * c), grid


def unpatchify(x, grid, patch, channels):
    """[b, f'*h'*w', pt*ph*pw*c] -> [b, f, h, w, c]."""
    b = x.shape[0]
    (f, h, w), (pt, ph, pw) = grid, patch
    x = x.reshape(b, f, h, w, pt, ph, pw, channels)
    x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)  # [b, f', pt, h', ph, w', pw, c]
    return x.reshape(b, f * pt, h * ph, w * pw, channels)


class DiT(nn.Module):
    """Wan 2.1 DiT with CamClone reference conditioning; see the module docstring."""

    config: DiTConfig

    @nn.compact
    def __call__(self, latents, timesteps, text_embeds, *, cam_latents=None,
                 content_latents=None, image_embeds=None, first_frame=None):
        """Predicts the flow velocity of the target latents.

        Args:
          latents: noisy target [b, f, h, w, out_channels].
          timesteps: [b] or scalar, on Wan's 0-1000 scale.
          text_embeds: [b, text_len, text_dim] text-encoder output (padding rows included).
          cam_latents, content_latents: clean reference latents shaped like ``latents``; a
            missing content reference is all zeros (I2V). Both absent: plain Wan.
          image_embeds: [b, image_len, image_dim] CLIP tokens (I2V base only).
          first_frame: [b, f, h, w, in_channels - out_channels] first-frame mask and latent
            channels (I2V base only); see ``first_frame_condition``.
        Returns:
          velocity [b, f, h, w, out_channels], float32.
        """
        cfg = self.config
        x, target_frames = assemble_input(cfg, latents, cam_latents, content_latents, first_frame)
        b = x.shape[0]
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32), (b,))  # [b]
        self._check_context(b, text_embeds, image_embeds)

        # Patch embedding: a conv with kernel = stride = patch, done as one matmul.
        tokens, grid = patchify(x.astype(cfg.dtype), cfg.patch_size)  # [b, L, pt*ph*pw*c]
        x = PatchEmbed(cfg, name="patch_embedding")(tokens)  # [b, L, dim]
        x = nn.with_logical_constraint(x, ACT)

        # Timestep: sinusoid -> MLP (float32) -> 6 modulation vectors per block.
        temb = MLP(cfg.dim, cfg.dim, "silu", ("in", "mlp"), ("mlp", "embed"), "float32",
                   cfg.param_dtype, name="time_embedding")(
            sinusoidal_embedding(timesteps, cfg.freq_dim))  # [b, dim]
        t_mod = dense(6 * cfg.dim, ("embed", "mod"), "time_projection", "float32",
                      cfg.param_dtype)(jax.nn.silu(temb)).reshape(b, 6, cfg.dim)  # [b, 6, dim]

        context = MLP(cfg.dim, cfg.dim, "gelu_tanh", ("in", "mlp"), ("mlp", "embed"),
                      cfg.dtype, cfg.param_dtype, name="text_embedding")(
            text_embeds.astype(cfg.dtype))  # [b, text_len, dim]
        image_context = None
        if cfg.image_dim is not None:
            image_context = ImageEmbedding(cfg, name="img_emb")(image_embeds)  # [b, 257, dim]

        cos, sin = rope_tables(grid, cfg.head_dim, cfg.rope_theta, cfg.rope_max_seq_len)
        x = self._blocks(grid)(x, (t_mod, context, image_context, cos, sin))[0]  # [b, L, dim]

        # Head: only the target tokens are predicted.
        grid = (target_frames // cfg.patch_size[0], *grid[1:])
        x = x[:, :math.prod(grid)]  # [b, L_target, dim]
        out = Head(cfg, name="head")(x, temb)  # [b, L_target, pt*ph*pw*c_out]
        return unpatchify(out.astype(jnp.float32), grid, cfg.patch_size, cfg.out_channels)

    def _check_context(self, b, text_embeds, image_embeds):
        cfg = self.config
        if text_embeds.ndim != 3 or text_embeds.shape[0] != b or text_embeds.shape[2] != cfg.text_dim:
            raise _shape_error("text_embeds", text_embeds.shape, f"({b}, text_len, {cfg.text_dim})")
        if cfg.image_dim is None and image_embeds is not None:
            raise ValueError("image_embeds given but the model has no image cross-attention "
                             "(image_dim is None)")
        if cfg.image_dim is not None and (
                image_embeds is None or image_embeds.ndim != 3 or image_embeds.shape[0] != b
                or image_embeds.shape[2] != cfg.image_dim):
            got = None if image_embeds is None else image_embeds.shape
            raise ValueError(f"this I2V model needs image_embeds of shape ({b}, image_len, "
                             f"{cfg.image_dim}), got {got}")

    def _blocks(self, grid):
        """The block stack: nn.scan over layers (params stacked on a leading 'layers' axis)."""
        cfg = self.config
        block = WanBlock
        if cfg.remat != "none":
            block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=nn.broadcast, length=cfg.num_layers,
                        unroll=1 if cfg.scan_layers else cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        return stack(cfg, grid, name="blocks")


class PatchEmbed(nn.Module):
    """Linear map of flattened patches; kernel kept in Conv3d order [pt, ph, pw, c_in, dim]."""

    config: DiTConfig

    @nn.compact
    def __call__(self, tokens):
        cfg = self.config
        shape = (*cfg.patch_size, cfg.patch_in_channels, cfg.dim)
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=4),
            (None, None, None, "in", "embed")), shape, cfg.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (cfg.dim,), cfg.param_dtype)
        kernel = kernel.reshape(-1, cfg.dim).astype(cfg.dtype)  # [pt*ph*pw*c_in, dim]
        return tokens @ kernel + bias.astype(cfg.dtype)  # [b, L, dim]


class Head(nn.Module):
    """Output head: LayerNorm modulated by (table + timestep embedding), then a linear map."""

    config: DiTConfig

    @nn.compact
    def __call__(self, x, temb):
        cfg = self.config
        table = self.param("modulation", nn.with_logical_partitioning(
            nn.initializers.normal(cfg.dim ** -0.5), (None, "embed")), (2, cfg.dim),
            cfg.param_dtype)
        shift, scale = jnp.split(table.astype(jnp.float32)[None] + temb[:, None], 2, axis=1)
        x = modulate(x, shift, scale, cfg.eps, cfg.dtype)  # [b, L, dim]
        return dense(math.prod(cfg.patch_size) * cfg.out_channels, ("embed", None), "proj",
                     cfg.dtype, cfg.param_dtype)(x)  # [b, L, pt*ph*pw*c_out]


class ImageEmbedding(nn.Module):
    """CLIP tokens -> model width: LayerNorm, Linear, GELU (exact), Linear, LayerNorm."""

    config: DiTConfig

    @nn.compact
    def __call__(self, image_embeds):
        cfg = self.config
        h = AffineLayerNorm(1e-5, cfg.dtype, "in", name="norm_in")(image_embeds)  # [b, Li, 1280]
        h = MLP(cfg.image_dim, cfg.dim, "gelu", ("in", "mlp"), ("mlp", "embed"), cfg.dtype,
                cfg.param_dtype, name="mlp")(h)  # [b, Li, dim]
        return AffineLayerNorm(1e-5, cfg.dtype, name="norm_out")(h)
