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

Block-sparse condition attention (``DiTConfig.cond_attention`` other than "full") runs the same
parameters over a ``TokenLayout``: noisy-target tokens first, then condition tokens; target
tokens attend to everything, condition tokens only within their groups, and the two kinds get
their own timestep modulation. The block can also emit the condition tokens' keys/values (to
build a cache) or take them from a cache instead of computing them (target-only sampling steps).
"""

from __future__ import annotations

import dataclasses

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


def rotate(x, cos, sin):
    """RoPE of x [b, L, h, d] with shared tables [L, d/2] or per-example tables [b, L, d/2]."""
    if cos.ndim == 2:
        return apply_rope(x, cos, sin)
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)  # [b, L, h, d/2, 2]
    x1, x2 = pairs[..., 0], pairs[..., 1]  # [b, L, h, d/2]
    c, s = cos[:, :, None, :], sin[:, :, None, :]  # [b, L, 1, d/2]
    out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)  # [b, L, h, d/2, 2]
    return out.reshape(x.shape).astype(dtype)


class SelfAttention(nn.Module):
    """Self-attention with q/k RMSNorm across heads and rotary positions.

    ``attend(q, k, v) -> out`` ([b, L, dim] each) replaces the plain all-to-all attention (the
    block-sparse layouts use it); ``return_kv`` also returns the keys (normalised, rotated) and
    values, the tensors a condition-token cache holds.
    """

    config: DiTConfig
    zero_init_out: bool = False

    @nn.compact
    def __call__(self, x, cos, sin, attend=None, return_kv: bool = False):
        cfg = self.config
        b, length, _ = x.shape
        proj = lambda name: dense(cfg.dim, ("embed", "heads"), name, cfg.dtype, cfg.param_dtype)
        q, k, v = proj("q")(x), proj("k")(x), proj("v")(x)  # [b, L, dim]
        if cfg.qk_norm:
            q = RMSNorm(cfg.eps, cfg.dtype, name="norm_q")(q)
            k = RMSNorm(cfg.eps, cfg.dtype, name="norm_k")(k)
        heads = (b, length, cfg.num_heads, cfg.head_dim)
        q = rotate(q.reshape(heads), cos, sin).reshape(b, length, cfg.dim)  # [b, L, dim]
        k = rotate(k.reshape(heads), cos, sin).reshape(b, length, cfg.dim)  # [b, L, dim]
        out = _attend(cfg, q, k, v) if attend is None else attend(q, k, v)  # [b, L, dim]
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.xavier_uniform()
        out = dense(cfg.dim, ("heads", "embed"), "o", cfg.dtype, cfg.param_dtype, out_init)(out)
        return (out, k, v) if return_kv else out  # [b, L, dim] each


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


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Static layout of a block-sparse token sequence (``cond_attention`` "joint"/"segment").

    The block input x [b, L, dim] holds ``target`` noisy-target tokens, then L - target
    condition tokens. ``groups`` are (start, length) spans of x that together cover the
    condition tokens exactly: a condition token attends only to the tokens of its span. Target
    tokens attend to all of x plus, when the block gets a cache, the cached condition
    keys/values. ``emit_kv``: the block also returns the condition tokens' keys and values of
    this layer (the cache). ``target`` is 0 when building a cache; x holds only the target in a
    cached sampling step.
    """

    target: int
    groups: tuple[tuple[int, int], ...] = ()
    emit_kv: bool = False

    def check(self, length: int):
        """Raises ValueError unless the groups tile [target, length) in order."""
        start = self.target
        for s, n in self.groups:
            if s != start or n < 1:
                raise ValueError(f"token layout {self} does not tile [{self.target}, {length})")
            start += n
        if start != length:
            raise ValueError(f"token layout {self} does not tile [{self.target}, {length})")


def _cat(parts):
    """Concatenates along the token axis; one part passes through unchanged."""
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


class WanBlock(nn.Module):
    """One DiT block; scanned over layers as ``(x, inputs[, cache]) -> (x, kv or None)``.

    ``inputs`` = (t_mod [b, 6, dim] of the target, text context, image context or None, cos,
    sin, t_mod of the condition tokens or None). Without a ``layout`` every token attends to
    every token under one modulation (the release); with one, see ``TokenLayout``; ``cache``
    then holds this layer's condition keys/values {"k", "v"}: [b, Lc, dim] each.
    """

    config: DiTConfig
    grid: tuple[int, int, int] = (1, 1, 1)  # token grid (frames, height, width), static
    layout: TokenLayout | None = None

    @nn.compact
    def __call__(self, x, inputs, cache=None):
        cfg = self.config
        t_mod, context, image_context, cos, sin, t_mod_cond = inputs
        dim = cfg.dim
        table = self.param("modulation", nn.with_logical_partitioning(
            nn.initializers.normal(dim ** -0.5), (None, "embed")), (6, dim), cfg.param_dtype)
        if self.layout is not None:
            modules = (SelfAttention(cfg, name="self_attn"),
                       AffineLayerNorm(cfg.eps, cfg.dtype, name="norm_cross")
                       if cfg.cross_attn_norm else None,
                       CrossAttention(cfg, name="cross_attn"),
                       MLP(cfg.ffn_dim, dim, "gelu_tanh", ("embed", "mlp"), ("mlp", "embed"),
                           cfg.dtype, cfg.param_dtype, name="ffn"))
            return _sparse_block(cfg, self.layout, modules, x, table, t_mod, t_mod_cond,
                                 context, image_context, cos, sin, cache)
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


def _sparse_block(cfg: DiTConfig, lay: TokenLayout, modules, x, table, t_mod, t_mod_cond, context,
                  image_context, cos, sin, cache):
    """WanBlock over a ``TokenLayout``: the same parameters (``modules`` = self_attn, norm_cross
    or None, cross_attn, ffn), modulation per token kind, block-sparse self-attention.
    Returns (x [b, L, dim], this layer's condition {"k", "v"} [b, Lc, dim] or None)."""
    self_attn, norm_cross, cross_attn, ffn_mlp = modules
    nt, length = lay.target, x.shape[1]
    lay.check(length)
    # Row ranges with their 6 modulation vectors: target at t, condition tokens at t = 0.
    pieces = []
    if nt:
        pieces.append((slice(0, nt), jnp.split(table.astype(jnp.float32)[None] + t_mod, 6,
                                                axis=1)))  # 6 x [b, 1, dim]
    if length > nt:
        pieces.append((slice(nt, length), jnp.split(
            table.astype(jnp.float32)[None] + t_mod_cond, 6, axis=1)))  # 6 x [b, 1, dim]

    def modulated(x, i):  # norm(x) * (1 + scale) + shift per piece, vectors i and i + 1
        return _cat([modulate(x[:, rows], m[i], m[i + 1], cfg.eps, cfg.dtype)
                     for rows, m in pieces])  # [b, L, dim]

    def gated(x, y, i):  # x + y * gate per piece
        return _cat([(x[:, rows].astype(jnp.float32) + y[:, rows].astype(jnp.float32) * m[i])
                     .astype(cfg.dtype) for rows, m in pieces])  # [b, L, dim]

    def attend(q, k, v):  # [b, L, dim] each
        outs = []
        if nt:  # target queries: every key of x, plus the cached condition keys
            keys, values = k, v
            if cache is not None:
                keys = jnp.concatenate([k, cache["k"].astype(k.dtype)], 1)  # [b, L + Lc, dim]
                values = jnp.concatenate([v, cache["v"].astype(v.dtype)], 1)  # [b, L + Lc, dim]
            outs.append(_attend(cfg, q[:, :nt], keys, values))  # [b, nt, dim]
        for s, n in lay.groups:  # condition queries: only their own group
            outs.append(_attend(cfg, q[:, s:s + n], k[:, s:s + n], v[:, s:s + n]))
        return _cat(outs)  # [b, L, dim]

    h = modulated(x, 0)  # [b, L, dim]
    attn, k, v = self_attn(h, cos, sin, attend=attend, return_kv=True)  # [b, L, dim] each
    x = nn.with_logical_constraint(gated(x, attn, 2), ACT)  # [b, L, dim]

    h = norm_cross(x) if norm_cross is not None else x
    x = x + cross_attn(h, context, image_context)  # [b, L, dim]

    h = modulated(x, 3)  # [b, L, dim]
    ffn = ffn_mlp(h)  # [b, L, dim]
    x = nn.with_logical_constraint(gated(x, ffn, 5), ACT)  # [b, L, dim]
    kv = {"k": k[:, nt:], "v": v[:, nt:]} if lay.emit_kv else None  # [b, Lc, dim] each
    return x, kv
