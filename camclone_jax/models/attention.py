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


def dot_product_attention(q, k, v, *, backend: str = "xla", block_q: int = 128,
                          block_kv: int = 8192):
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


def blockwise_attention(q, k, v, *, block_q: int = 128, block_kv: int = 8192):
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
    out = _flash_tiles(q_tiles, k_tiles, v_tiles, lk)  # [nq, b, h, bq, d]
    out = out.transpose(1, 0, 3, 2, 4).reshape(b, nq * block_q, h, d)  # [b, lq_pad, h, d]
    return out[:, :lq]


def _scores(q_tile, k_tile, kv_index, kv_len: int):
    """Scaled scores of one tile pair, padded keys masked: [b, h, bq, bk] float32."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q_tile, k_tile, preferred_element_type=jnp.float32)
    block_kv = k_tile.shape[2]
    if kv_len % block_kv:  # only the last tile holds padding, but the mask is cheap
        valid = kv_index * block_kv + jnp.arange(block_kv) < kv_len  # [bk]
        s = jnp.where(valid[None, None, None, :], s, -jnp.inf)
    return s


def _forward_tiles(q_tiles, k_tiles, v_tiles, kv_len):
    """Online-softmax forward; returns (out tiles, log-sum-exp [nq, b, h, bq])."""
    scale = q_tiles.shape[-1] ** -0.5
    nk = k_tiles.shape[0]

    def one_q_tile(q_tile):
        b, h, bq, d = q_tile.shape
        q_tile = q_tile * jnp.asarray(scale, q_tile.dtype)

        def step(carry, kv):
            m, l, acc = carry  # [b, h, bq], [b, h, bq], [b, h, bq, d]
            k_tile, v_tile, index = kv
            s = _scores(q_tile, k_tile, index, kv_len)  # [b, h, bq, bk]
            m_new = jnp.maximum(m, s.max(axis=-1))  # [b, h, bq]
            p = jnp.exp(s - m_new[..., None])  # [b, h, bq, bk]
            correction = jnp.exp(m - m_new)  # [b, h, bq]
            pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v_tile.dtype), v_tile,
                            preferred_element_type=jnp.float32)  # [b, h, bq, d]
            return (m_new, l * correction + p.sum(-1), acc * correction[..., None] + pv), None

        init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
                jnp.zeros((b, h, bq, d), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(step, init, (k_tiles, v_tiles, jnp.arange(nk)))
        return (acc / l[..., None]).astype(q_tile.dtype), m + jnp.log(l)

    return jax.lax.map(one_q_tile, q_tiles)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash_tiles(q_tiles, k_tiles, v_tiles, kv_len: int):
    """Attention over tiles q [nq, b, h, bq, d], k/v [nk, b, h, bk, d] -> [nq, b, h, bq, d]."""
    return _forward_tiles(q_tiles, k_tiles, v_tiles, kv_len)[0]


def _flash_fwd(q_tiles, k_tiles, v_tiles, kv_len):
    out, lse = _forward_tiles(q_tiles, k_tiles, v_tiles, kv_len)
    return out, (q_tiles, k_tiles, v_tiles, out, lse)


def _flash_bwd(kv_len, residuals, d_out):
    """Flash-attention backward: probabilities recomputed per tile from the saved lse.

    Key/value tiles are the outer loop, carrying their own small dK/dV accumulators over the
    query tiles; dQ is accumulated once per key/value tile (once in total when one tile holds
    all keys, the usual CPU setting), not rewritten for every query tile.
    """
    q_tiles, k_tiles, v_tiles, out, lse = residuals
    scale = q_tiles.shape[-1] ** -0.5
    q_scaled = q_tiles * jnp.asarray(scale, q_tiles.dtype)  # [nq, b, h, bq, d]
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)  # [nq, b, h, bq]

    def one_kv_tile(dq_acc, kv):
        k_tile, v_tile, index = kv  # [b, h, bk, d], [b, h, bk, d], []

        def one_q_tile(dkv, q):
            dk, dv = dkv  # [b, h, bk, d] each, float32
            q_tile, do_tile, lse_tile, delta_tile = q
            s = _scores(q_tile, k_tile, index, kv_len)  # [b, h, bq, bk]
            p = jnp.exp(s - lse_tile[..., None])  # [b, h, bq, bk]
            dv = dv + jnp.einsum("bhqk,bhqd->bhkd", p.astype(do_tile.dtype), do_tile,
                                 preferred_element_type=jnp.float32)
            dp = jnp.einsum("bhqd,bhkd->bhqk", do_tile, v_tile,
                            preferred_element_type=jnp.float32)  # [b, h, bq, bk]
            ds = (p * (dp - delta_tile[..., None])).astype(q_tile.dtype)  # [b, h, bq, bk]
            dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds, q_tile, preferred_element_type=jnp.float32)
            dq = jnp.einsum("bhqk,bhkd->bhqd", ds, k_tile, preferred_element_type=jnp.float32)
            return (dk, dv), dq

        zeros = jnp.zeros(k_tile.shape, jnp.float32)
        (dk, dv), dq = jax.lax.scan(one_q_tile, (zeros, zeros), (q_scaled, d_out, lse, delta))
        return dq_acc + dq, (dk, dv)

    nk = k_tiles.shape[0]
    dq, (dk, dv) = jax.lax.scan(one_kv_tile, jnp.zeros(q_tiles.shape, jnp.float32),
                                (k_tiles, v_tiles, jnp.arange(nk)))
    return (dq * scale).astype(q_tiles.dtype), dk.astype(k_tiles.dtype), dv.astype(v_tiles.dtype)


_flash_tiles.defvjp(_flash_fwd, _flash_bwd)
