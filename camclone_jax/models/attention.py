"""Multi-head attention kernels behind one function, chosen by config.

``dot_product_attention(q, k, v, backend=...)`` with q [batch, q_len, heads, head_dim] and
k, v [batch, kv_len, heads, head_dim]; no mask (Wan attends to every token, text padding
included). Backends:
  * "xla": the reference: full score matrix, softmax in float32. Any device.
  * "flash": blockwise attention in plain XLA: queries in tiles (``lax.map``), keys/values in
    tiles (``lax.scan``) with an online softmax, so the [q_len, kv_len] score matrix never
    exists; each key/value step is rematerialised in the backward pass. Any device; the fast
    path on CPU and the memory-bounded one everywhere.
  * "cudnn": ``jax.nn.dot_product_attention(implementation="cudnn")``, cuDNN flash attention
    (GPU, 16-bit inputs; float32 inputs are run in bfloat16).
  * "auto": cudnn on GPU with a 16-bit compute dtype, flash otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def resolve_backend(backend: str, dtype) -> str:
    """Maps "auto" to a concrete backend for the default device and compute dtype."""
    if backend != "auto":
        return backend
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "flash"


def dot_product_attention(q, k, v, *, backend: str = "xla", block_q: int = 512,
                          block_kv: int = 1024):
    """Softmax(q k^T / sqrt(d)) v per head: [b, lq, h, d] x [b, lk, h, d] -> [b, lq, h, d]."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[::2] != k.shape[::2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention shapes do not agree: q {q.shape}, k {k.shape}, v {v.shape}")
    backend = resolve_backend(backend, q.dtype)
    if backend == "xla":
        return reference_attention(q, k, v)
    if backend == "flash":
        return blockwise_attention(q, k, v, block_q=block_q, block_kv=block_kv)
    if backend == "cudnn":
        dtype = q.dtype
        if jnp.dtype(dtype).itemsize != 2:
            q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
        out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        return out.astype(dtype)
    raise ValueError(f"unknown attention backend {backend!r}")


def reference_attention(q, k, v):
    """Full-matrix attention with the softmax in float32."""
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)  # [b, h, lq, lk]
    probs = jax.nn.softmax(scores * scale, axis=-1)  # [b, h, lq, lk]
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)  # [b, lq, h, d]
    return out.astype(q.dtype)


def _pad_to(x, multiple: int, axis: int = 1):
    """Zero-pads axis to a multiple; returns (padded, original length)."""
    n = x.shape[axis]
    pad = -n % multiple
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = jnp.pad(x, widths)
    return x, n


def blockwise_attention(q, k, v, *, block_q: int = 512, block_kv: int = 1024):
    """Flash-style attention in plain XLA; exact up to float rounding, any length."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    block_q, block_kv = min(block_q, lq), min(block_kv, lk)
    q, _ = _pad_to(q, block_q)
    k, _ = _pad_to(k, block_kv)
    v, _ = _pad_to(v, block_kv)
    nq, nk = q.shape[1] // block_q, k.shape[1] // block_kv
    # Heads-major tiles, so every tile product is a plain batched matmul over (b, h).
    q_tiles = q.reshape(b, nq, block_q, h, d).transpose(1, 0, 3, 2, 4)  # [nq, b, h, bq, d]
    k_tiles = k.reshape(b, nk, block_kv, h, d).transpose(1, 0, 3, 2, 4)  # [nk, b, h, bk, d]
    v_tiles = v.reshape(b, nk, block_kv, h, d).transpose(1, 0, 3, 2, 4)  # [nk, b, h, bk, d]
    kv_valid = (jnp.arange(nk * block_kv) < lk).reshape(nk, block_kv)  # [nk, bk]
    one_q_tile = functools.partial(_attend_tile, k_tiles=k_tiles, v_tiles=v_tiles,
                                   kv_valid=kv_valid, masked=nk * block_kv != lk,
                                   scale=d ** -0.5)
    out = jax.lax.map(one_q_tile, q_tiles)  # [nq, b, h, bq, d]
    out = out.transpose(1, 0, 3, 2, 4).reshape(b, nq * block_q, h, d)  # [b, lq_pad, h, d]
    return out[:, :lq]


def _attend_tile(q_tile, *, k_tiles, v_tiles, kv_valid, masked: bool, scale: float):
    """One query tile [b, h, bq, d] against all key/value tiles with an online softmax."""
    b, h, bq, d = q_tile.shape
    q_tile = q_tile * jnp.asarray(scale, q_tile.dtype)

    @jax.checkpoint
    def step(carry, kv):
        m, l, acc = carry  # [b, h, bq], [b, h, bq], [b, h, bq, d]
        k_tile, v_tile, valid = kv
        s = jnp.einsum("bhqd,bhkd->bhqk", q_tile, k_tile,
                       preferred_element_type=jnp.float32)  # [b, h, bq, bk]
        if masked:
            s = jnp.where(valid[None, None, None, :], s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(axis=-1))  # [b, h, bq]
        p = jnp.exp(s - m_new[..., None])  # [b, h, bq, bk]
        correction = jnp.exp(m - m_new)  # [b, h, bq]
        l_new = l * correction + p.sum(axis=-1)
        pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v_tile.dtype), v_tile,
                        preferred_element_type=jnp.float32)  # [b, h, bq, d]
        return (m_new, l_new, acc * correction[..., None] + pv), None

    init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
            jnp.zeros((b, h, bq, d), jnp.float32))
    (_, l, acc), _ = jax.lax.scan(step, init, (k_tiles, v_tiles, kv_valid))
    return (acc / l[..., None]).astype(q_tile.dtype)  # [b, h, bq, d]
