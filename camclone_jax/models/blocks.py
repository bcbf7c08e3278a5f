"""The Wan transformer block: modulated 3D self-attention, text/image cross-attention, FFN.

Parameter paths inside one block (the block stack adds a leading "layers" axis):
  modulation                                   [6, dim] table added to the timestep projection
  self_attn/{q,k,v,o}/{kernel,bias}, self_attn/norm_{q,k}/scale   the 3D spatial-temporal attention
  spatial_attn/...                             optional 2D per-frame attention (paper variant)
  norm_cross/{scale,bias}                      affine LayerNorm before cross-attention
  cross_attn/{q,k,v,o}, cross_attn/norm_{q,k}  text cross-attention
  cross_attn/{k_img,v_img}, cross_attn/norm_k_img   I2V image cross-attention
  ffn/{fc1,fc2}                                GELU-tanh feed-forward
Everything the CamClone fine-tuning trains lives under ``self_attn``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from camclone_jax.models.attention import dot_product_attention
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.layers import MLP, AffineLayerNorm, RMSNorm, dense, layer_norm, modulate
from camclone_jax.models.rope import apply_rope

# Activations' logical axes; "act_embed" is separate from the params' "embed" so FSDP can shard
# param rows over a mesh axis that also shards the batch.
ACT = ("batch", "length", "act_embed")


def _attend(cfg: DiTConfig, q, k, v, shard_kv: bool = True):
    """Splits heads, runs the configured attention kernel, merges heads.

    Under ``cfg.context_parallel`` the queries are sharded over the context axis; keys/values
    too when ``shard_kv`` (self-attention), else they stay whole on every shard (text/image
    cross-attention: a few hundred tokens).
    """
    b, lq, _ = q.shape
    lk = k.shape[1]
    q = q.reshape(b, lq, cfg.num_heads, cfg.head_dim)  # [b, lq, h, d]
    k = k.reshape(b, lk, cfg.num_heads, cfg.head_dim)  # [b, lk, h, d]
    v = v.reshape(b, lk, cfg.num_heads, cfg.head_dim)  # [b, lk, h, d]
    out = dot_product_attention(q, k, v, backend=cfg.attention, block_q=cfg.flash_block_q,
                                block_kv=cfg.flash_block_kv, context_parallel=cfg.context_parallel,
                                shard_kv=shard_kv)  # [b, lq, h, d]
    return out.reshape(b, lq, cfg.dim)  # [b, lq, dim]


class SelfAttention(nn.Module):
    """Self-attention with q/k RMSNorm across heads and rotary positions."""

    config: DiTConfig
    zero_init_out: bool = False

    @nn.compact
    def __call__(self, x, cos, sin):
        cfg = self.config
        b, length, _ = x.shape
        proj = lambda name: dense(cfg.dim, ("embed", "heads"), name, cfg.dtype, cfg.param_dtype)
        q, k, v = proj("q")(x), proj("k")(x), proj("v")(x)  # [b, L, dim]
        if cfg.qk_norm:
            q = RMSNorm(cfg.eps, cfg.dtype, name="norm_q")(q)
            k = RMSNorm(cfg.eps, cfg.dtype, name="norm_k")(k)
        heads = (b, length, cfg.num_heads, cfg.head_dim)
        q = apply_rope(q.reshape(heads), cos, sin).reshape(b, length, cfg.dim)  # [b, L, dim]
        k = apply_rope(k.reshape(heads), cos, sin).reshape(b, length, cfg.dim)  # [b, L, dim]
        out = _attend(cfg, q, k, v)  # [b, L, dim]
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.xavier_uniform()
        return dense(cfg.dim, ("heads", "embed"), "o", cfg.dtype, cfg.param_dtype, out_init)(out)


class CrossAttention(nn.Module):
    """Attention from video tokens to text tokens, plus image tokens for the I2V base."""

    config: DiTConfig

    @nn.compact
    def __call__(self, x, context, image_context=None):
        cfg = self.config
        proj = lambda name: dense(cfg.dim, ("embed", "heads"), name, cfg.dtype, cfg.param_dtype)
        q, k, v = proj("q")(x), proj("k")(context), proj("v")(context)  # [b, L|Lt, dim]
        if cfg.qk_norm:
            q = RMSNorm(cfg.eps, cfg.dtype, name="norm_q")(q)
            k = RMSNorm(cfg.eps, cfg.dtype, name="norm_k")(k)
        out = _attend(cfg, q, k, v, shard_kv=False)  # [b, L, dim]
        if image_context is not None:
            k_img = proj("k_img")(image_context)  # [b, Li, dim]
            if cfg.qk_norm:
                k_img = RMSNorm(cfg.eps, cfg.dtype, name="norm_k_img")(k_img)
            v_img = proj("v_img")(image_context)  # [b, Li, dim]
            out = out + _attend(cfg, q, k_img, v_img, shard_kv=False)  # [b, L, dim]
        return dense(cfg.dim, ("heads", "embed"), "o", cfg.dtype, cfg.param_dtype)(out)


class SpatialAttention(nn.Module):
    """The paper's 2D spatial self-attention: tokens attend only within their own frame.

    Pre-LayerNorm, residual added by the caller, output projection initialised at zero so a
    pretrained block is unchanged at the start. RoPE tables of the first frame are used: within
    one frame every token has the same temporal position, so this is 2D rotary positions.
    """

    config: DiTConfig
    grid: tuple[int, int, int]

    @nn.compact
    def __call__(self, x, cos, sin):
        cfg = self.config
        b, length, dim = x.shape
        frames, per_frame = self.grid[0], self.grid[1] * self.grid[2]
        h = layer_norm(x, cfg.eps).astype(cfg.dtype).reshape(b * frames, per_frame, dim)
        out = SelfAttention(cfg, zero_init_out=True, name="attn")(
            h, cos[:per_frame], sin[:per_frame])  # [b*f, hw, dim]
        return out.reshape(b, length, dim)


class WanBlock(nn.Module):
    """One DiT block; scanned over layers as ``(x, broadcast inputs) -> (x, None)``."""

    config: DiTConfig
    grid: tuple[int, int, int] = (1, 1, 1)  # token grid (frames, height, width), static

    @nn.compact
    def __call__(self, x, inputs):
        cfg = self.config
        t_mod, context, image_context, cos, sin = inputs
        dim = cfg.dim
        table = self.param("modulation", nn.with_logical_partitioning(
            nn.initializers.normal(dim ** -0.5), (None, "embed")), (6, dim), cfg.param_dtype)
        e = table.astype(jnp.float32)[None] + t_mod  # [b, 6, dim]
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = jnp.split(e, 6, axis=1)  # [b, 1, dim]

        if cfg.spatial_attn:
            x = x + SpatialAttention(cfg, self.grid, name="spatial_attn")(x, cos, sin)

        h = modulate(x, shift_a, scale_a, cfg.eps, cfg.dtype)  # [b, L, dim]
        attn = SelfAttention(cfg, name="self_attn")(h, cos, sin)  # [b, L, dim]
        x = (x.astype(jnp.float32) + attn.astype(jnp.float32) * gate_a).astype(cfg.dtype)
        x = nn.with_logical_constraint(x, ACT)

        h = AffineLayerNorm(cfg.eps, cfg.dtype, name="norm_cross")(x) if cfg.cross_attn_norm else x
        x = x + CrossAttention(cfg, name="cross_attn")(h, context, image_context)

        h = modulate(x, shift_f, scale_f, cfg.eps, cfg.dtype)  # [b, L, dim]
        ffn = MLP(cfg.ffn_dim, dim, "gelu_tanh", ("embed", "mlp"), ("mlp", "embed"), cfg.dtype,
                  cfg.param_dtype, name="ffn")(h)  # [b, L, dim]
        x = (x.astype(jnp.float32) + ffn.astype(jnp.float32) * gate_f).astype(cfg.dtype)
        return nn.with_logical_constraint(x, ACT), None
