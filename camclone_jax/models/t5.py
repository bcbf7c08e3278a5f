"""umT5 encoder (the Wan 2.1 text encoder, umT5-XXL) and Wan's prompt encoding.

Architecture (equal to transformers' ``UMT5EncoderModel`` and Wan's ``T5Encoder`` with
``shared_pos=False``): token embedding -> N pre-norm blocks -> final RMS norm. Each block:
  x += o(attn(rms_norm1(x)))  with unscaled dot-product attention, a padding mask, and a
      relative position bias looked up from the block's OWN bucket table (umT5; T5 shares
      layer 0's table);
  x += fc2(gelu_tanh(gate(h)) * fc1(h)),  h = rms_norm2(x)   (gated-GELU, "gelu_new").
RMS norms are T5's: x * rsqrt(mean(x^2) + eps) * scale, no mean subtraction, no bias, computed
in float32. No linear layer has a bias.

Parameter paths (blocks stacked on a leading "layers" axis, as the DiT does):
  token_embedding/embedding [vocab, dim]
  blocks/norm1/scale [L, dim]            blocks/norm2/scale [L, dim]
  blocks/attn/{q,k,v}/kernel [L, dim, heads*head_dim]
  blocks/attn/o/kernel [L, heads*head_dim, dim]
  blocks/pos_embedding [L, num_buckets, heads]
  blocks/ffn/{gate,fc1}/kernel [L, dim, ffn_dim]   blocks/ffn/fc2/kernel [L, ffn_dim, dim]
  norm/scale [dim]
``gate`` is the GELU branch (transformers ``wi_0``), ``fc1`` the linear branch (``wi_1``).
Logical axes as in the DiT ("layers", "embed", "heads", "mlp"), plus "vocab" for the embedding
rows (no rule in sharding.DEFAULT_RULES, so replicated; its width follows "embed").

Prompt encoding as Wan does it: tokenize to ``text_len`` (512) with padding and EOS, run the
encoder with the attention mask, zero the embeddings past each prompt's length.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.base import ConfigBase, init_plain, prepare_params, shapes_plain, specs_plain
from camclone_jax.models.layers import RMSNorm, dense

KIND = "t5"
_normal = nn.initializers.normal


@dataclasses.dataclass(frozen=True)
class T5Config(ConfigBase):
    """umT5 encoder sizes and execution switches (defaults: umT5-XXL as Wan uses it).

    Attributes:
      vocab_size, dim, num_heads, head_dim (inner attention width = num_heads * head_dim),
      ffn_dim, num_layers: sizes.
      num_buckets, max_distance: relative position buckets (bidirectional: half per direction).
      eps: RMS-norm epsilon.
      text_len: tokens per prompt (Wan: 512).
      dtype: compute dtype; param_dtype: dtype of freshly initialised params.
      scan_layers: run the blocks with one compiled ``nn.scan`` step (False unrolls them).
    """

    vocab_size: int = 256384
    dim: int = 4096
    num_heads: int = 64
    head_dim: int = 64
    ffn_dim: int = 10240
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = True

    def __post_init__(self):
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"num_buckets must be even and >= 4, got {self.num_buckets}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name} must be float32, bfloat16 or float16, got "
                                 f"{getattr(self, name)!r}")

    @property
    def inner_dim(self) -> int:
        """Width of the q/k/v projections."""
        return self.num_heads * self.head_dim

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any], **overrides) -> "T5Config":
        """From a transformers ``UMT5Config`` dict (config.json of ``UMT5EncoderModel``)."""
        act = config.get("feed_forward_proj", "gated-gelu")
        if act not in ("gated-gelu",):
            raise ValueError(f"feed_forward_proj {act!r} is not supported; the umT5 encoder "
                             "uses 'gated-gelu' (gelu tanh approximation)")
        if config.get("model_type", "umt5") != "umt5":
            raise ValueError(f"model_type {config['model_type']!r} is not 'umt5' (plain T5 shares "
                             "one position-bias table; this encoder expects one per layer)")
        return cls.from_keys(config, TRANSFORMERS_KEYS, overrides)


# our field -> transformers' UMT5Config key, or (key, default)
TRANSFORMERS_KEYS = dict(
    vocab_size="vocab_size", dim="d_model", num_heads="num_heads", head_dim="d_kv", ffn_dim="d_ff",
    num_layers="num_layers", num_buckets=("relative_attention_num_buckets", 32),
    max_distance=("relative_attention_max_distance", 128), eps=("layer_norm_epsilon", 1e-6))
UMT5_XXL = T5Config()


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucket of (key - query) for every (query, key) pair -> [L, L] int32.

    Half the buckets per direction; within one, the first half are exact distances and the rest
    log-spaced up to ``max_distance``. The log is taken in float32, as PyTorch does.
    """
    pos = np.arange(length)
    rel = pos[None, :] - pos[:, None]  # [Lq, Lk]
    half = num_buckets // 2
    bucket = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        ratio = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = max_exact + np.where(rel < max_exact, 0, large).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (bucket + np.where(rel < max_exact, rel, large)).astype(np.int32)  # [Lq, Lk]


class SelfAttention(nn.Module):
    """Unscaled multi-head self-attention with an additive bias (position + padding), no biases."""

    config: T5Config

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.config
        b, length, _ = x.shape
        h, hd = cfg.num_heads, cfg.head_dim
        proj = functools.partial(dense, use_bias=False, dtype=cfg.dtype,
                                 param_dtype=cfg.param_dtype, kernel_init=_normal(cfg.dim ** -0.5))
        q, k, v = (proj(cfg.inner_dim, ("embed", "heads"), name)(x).reshape(b, length, h, hd)
                   for name in "qkv")  # [b, L, h, hd] each
        # T5 does not scale the logits by 1/sqrt(head_dim).
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                            preferred_element_type=jnp.float32)  # [b, h, L, L]
        weights = jax.nn.softmax(logits + bias, axis=-1).astype(cfg.dtype)  # [b, h, L, L]
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, h * hd)  # [b, L, inner]
        return proj(cfg.dim, ("heads", "embed"), "o",
                    kernel_init=_normal(cfg.inner_dim ** -0.5))(out)  # [b, L, dim]


class T5Block(nn.Module):
    """One umT5 encoder block; scanned as ``(x, (mask_bias, buckets)) -> (x, None)``."""

    config: T5Config

    @nn.compact
    def __call__(self, x, inputs):
        cfg = self.config
        mask_bias, buckets = inputs  # [b, 1, 1, L] float32, [L, L] int32
        table = self.param("pos_embedding", nn.with_logical_partitioning(
            _normal((2 * cfg.num_buckets * cfg.num_heads) ** -0.5), (None, None)),
            (cfg.num_buckets, cfg.num_heads), cfg.param_dtype)
        pos_bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [L, L, h]
        bias = pos_bias.transpose(2, 0, 1)[None] + mask_bias  # [b, h, L, L]

        y = RMSNorm(cfg.eps, cfg.dtype, axis_name="embed", name="norm1")(x)  # [b, L, dim]
        x = x + SelfAttention(cfg, name="attn")(y, bias).astype(x.dtype)  # [b, L, dim]
        y = RMSNorm(cfg.eps, cfg.dtype, axis_name="embed", name="norm2")(x)  # [b, L, dim]
        x = x + FeedForward(cfg, name="ffn")(y).astype(x.dtype)  # [b, L, dim]
        return x, None


class FeedForward(nn.Module):
    """Gated GELU: fc2(gelu_tanh(gate(x)) * fc1(x)), no biases."""

    config: T5Config

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        proj = functools.partial(dense, use_bias=False, dtype=cfg.dtype,
                                 param_dtype=cfg.param_dtype)
        gate = proj(cfg.ffn_dim, ("embed", "mlp"), "gate", kernel_init=_normal(cfg.dim ** -0.5))(x)
        lin = proj(cfg.ffn_dim, ("embed", "mlp"), "fc1", kernel_init=_normal(cfg.dim ** -0.5))(x)
        h = jax.nn.gelu(gate, approximate=True) * lin  # [b, L, ffn]
        return proj(cfg.dim, ("mlp", "embed"), "fc2",
                    kernel_init=_normal(cfg.ffn_dim ** -0.5))(h)  # [b, L, dim]


class UMT5Encoder(nn.Module):
    """The umT5 encoder: ``(ids [b, L] int, mask [b, L] bool/int) -> hidden [b, L, dim]``."""

    config: T5Config

    @nn.compact
    def __call__(self, ids, mask=None):
        cfg = self.config
        if ids.ndim != 2:
            raise ValueError(f"ids must be [batch, length], got shape {tuple(ids.shape)}")
        if mask is None:
            mask = jnp.ones(ids.shape, bool)
        if tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from ids shape "
                             f"{tuple(ids.shape)}")
        embed = nn.Embed(cfg.vocab_size, cfg.dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         embedding_init=nn.with_logical_partitioning(
                             _normal(1.0), ("vocab", "embed")), name="token_embedding")
        x = embed(ids.astype(jnp.int32))  # [b, L, dim]
        neg = jnp.finfo(jnp.float32).min
        mask_bias = jnp.where(mask.astype(bool), 0.0, neg)[:, None, None, :]  # [b, 1, 1, L]
        buckets = jnp.asarray(relative_position_buckets(
            ids.shape[1], cfg.num_buckets, cfg.max_distance))  # [L, L]
        stack = nn.scan(T5Block, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=nn.broadcast, length=cfg.num_layers,
                        unroll=1 if cfg.scan_layers else cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(cfg, name="blocks")(x, (mask_bias.astype(jnp.float32), buckets))
        return RMSNorm(cfg.eps, cfg.dtype, axis_name="embed", name="norm")(x)  # [b, L, dim]


# ------------------------------------------------------------------------------- params
def _init_boxed(cfg: T5Config, rng):
    ids = jnp.zeros((1, 2), jnp.int32)
    return UMT5Encoder(cfg).init(rng, ids)["params"]


init_t5_params = functools.partial(init_plain, _init_boxed)  # (config, rng=0) -> params
t5_param_shapes = functools.partial(shapes_plain, _init_boxed)  # (config) -> shapes tree
t5_logical_specs = functools.partial(specs_plain, _init_boxed)  # (config) -> axis names tree


# ---------------------------------------------------------------------------- encoding
@functools.partial(jax.jit, static_argnums=0)
def _encode(cfg: T5Config, params, ids, mask):
    out = UMT5Encoder(cfg).apply({"params": params}, ids, mask)  # [b, L, dim]
    return jnp.where(mask[..., None].astype(bool), out, 0).astype(out.dtype)  # [b, L, dim]


def encode_ids(config: T5Config, params, ids, mask):
    """Jitted encoder on token ids with rows past the mask set to zero -> [b, L, dim]."""
    return _encode(config, prepare_params(config, params), jnp.asarray(ids, jnp.int32),
                   jnp.asarray(mask, jnp.int32))


def encode_prompts(prompts: str | Sequence[str], tokenizer, config: T5Config, params, *,
                   max_length: int | None = None, batch_size: int = 8):
    """Wan's text conditioning: [batch, max_length, dim] embeddings (zero past each prompt's
    length) and the lengths [batch] (tokens including EOS), both numpy.

    ``tokenizer`` is a ``camclone_jax.models.tokenizer.Tokenizer`` (or anything whose
    ``__call__(texts, max_length)`` returns (ids, mask) arrays of shape [b, max_length]).
    Prompts are encoded in chunks of ``batch_size``; a short chunk (the last, or a call with
    fewer prompts) is filled up with copies of the first prompt (dropped from the result), so
    every call has one shape and the encoder compiles once.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    max_length = max_length or config.text_len
    ids, mask = tokenizer(prompts, max_length=max_length)  # [n, L], [n, L]
    params = prepare_params(config, params)
    n = len(prompts)
    step = max(1, batch_size)  # every call has this batch shape: one compilation per job
    pad = -n % step
    ids = np.concatenate([ids, np.repeat(ids[:1], pad, 0)]) if pad else ids
    mask = np.concatenate([mask, np.repeat(mask[:1], pad, 0)]) if pad else mask
    chunks = [np.asarray(encode_ids(config, params, ids[i:i + step], mask[i:i + step]))
              for i in range(0, len(ids), step)]
    out = np.concatenate(chunks)[:n]  # [n, L, dim]
    return out, np.asarray(mask[:n]).sum(-1).astype(np.int32)
