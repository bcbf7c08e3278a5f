"""One device's attention kernels, shared by the dispatcher (attention.py) and the
sequence-parallel paths (context_parallel.py).

q [batch, q_len, heads, head_dim], k, v [batch, kv_len, heads, head_dim]; keys at positions
``>= kv_len`` (optional) are padding and masked out. ``local_attention`` picks one of:
  * ``reference_attention``: the full score matrix, softmax in float32 ("xla").
  * ``blockwise_attention``: flash-style tiles in plain XLA ("flash"): queries in tiles
    (``lax.map``), keys/values in tiles (``lax.scan``) with an online softmax, a custom VJP that
    recomputes the probabilities per tile. Its tile functions (``to_tiles``, ``forward_tiles``,
    ``backward_tiles``, ``output_delta``) are what ring attention runs on every hop.
  * cuDNN flash attention through ``jax.nn.dot_product_attention`` ("cudnn", GPU, 16-bit).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

LOCAL_BACKENDS = ("xla", "flash", "cudnn")


def local_attention(q, k, v, *, backend: str, block_q: int = 128, block_kv: int = 8192,
                    kv_len: int | None = None):
    """One device's attention with a concrete backend; keys at positions >= kv_len are masked."""
    if kv_len is not None and kv_len >= k.shape[1]:
        kv_len = None
    if backend == "xla":
        return reference_attention(q, k, v, kv_len=kv_len)
    if backend == "flash":
        return blockwise_attention(q, k, v, block_q=block_q, block_kv=block_kv, kv_len=kv_len)
    if backend == "cudnn":
        dtype = q.dtype
        if jnp.dtype(dtype).itemsize != 2:
            q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
        lengths = None if kv_len is None else jnp.full((q.shape[0],), kv_len, jnp.int32)  # [b]
        out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                           implementation="cudnn")
        return out.astype(dtype)
    raise ValueError(f"unknown attention backend {backend!r}")


def reference_attention(q, k, v, kv_len: int | None = None):
    """Full-matrix attention with the softmax in float32; keys >= kv_len masked if given."""
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)  # [b, h, lq, lk]
    if kv_len is not None:
        valid = jnp.arange(k.shape[1]) < kv_len  # [lk]
        scores = jnp.where(valid[None, None, None, :], scores, -jnp.inf)
    probs = jax.nn.softmax(scores * scale, axis=-1)  # [b, h, lq, lk]
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)  # [b, lq, h, d]
    return out.astype(q.dtype)


def pad_to(x, multiple: int, axis: int = 1):
    """Zero-pads axis to a multiple; returns (padded, original length)."""
    n = x.shape[axis]
    pad = -n % multiple
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = jnp.pad(x, widths)
    return x, n


def to_tiles(x, block: int):
    """[b, l, h, d] -> heads-major tiles [l_pad / block, b, h, block, d], zero-padded."""
    x, _ = pad_to(x, block)
    b, length, h, d = x.shape
    return x.reshape(b, length // block, block, h, d).transpose(1, 0, 3, 2, 4)


def from_tiles(tiles, length: int):
    """Inverse of ``to_tiles``: [n, b, h, block, d] -> [b, length, h, d]."""
    n, b, h, block, d = tiles.shape
    return tiles.transpose(1, 0, 3, 2, 4).reshape(b, n * block, h, d)[:, :length]


def blockwise_attention(q, k, v, *, block_q: int = 128, block_kv: int = 8192,
                        kv_len: int | None = None):
    """Flash-style attention in plain XLA; exact up to float rounding, any length.

    Keys at positions >= ``kv_len`` (default: all keys valid) are masked out.
    """
    lq, lk = q.shape[1], k.shape[1]
    kv_len = lk if kv_len is None else min(int(kv_len), lk)
    block_q, block_kv = min(block_q, lq), min(block_kv, lk)
    # Heads-major tiles, so every tile product is a plain batched matmul over (b, h).
    q_tiles = to_tiles(q, block_q)  # [nq, b, h, bq, d]
    k_tiles = to_tiles(k, block_kv)  # [nk, b, h, bk, d]
    v_tiles = to_tiles(v, block_kv)  # [nk, b, h, bk, d]
    out = _flash_tiles(q_tiles, k_tiles, v_tiles, kv_len)  # [nq, b, h, bq, d]
    return from_tiles(out, lq)  # [b, lq, h, d]


def _needs_mask(kv_len, k_tiles) -> bool:
    """Static: whether any key slot of the tiles can be padding (always, for a traced kv_len)."""
    if isinstance(kv_len, (int, np.integer)):
        return int(kv_len) < k_tiles.shape[0] * k_tiles.shape[3]
    return True


def _scores(q_tile, k_tile, kv_index, kv_len, masked: bool):
    """Scaled scores of one tile pair, keys >= kv_len masked: [b, h, bq, bk] float32."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q_tile, k_tile, preferred_element_type=jnp.float32)
    if masked:
        block_kv = k_tile.shape[2]
        valid = kv_index * block_kv + jnp.arange(block_kv) < kv_len  # [bk]
        s = jnp.where(valid[None, None, None, :], s, -jnp.inf)
    return s


def forward_tiles(q_tiles, k_tiles, v_tiles, kv_len, out_dtype=None):
    """Online-softmax forward; returns (out tiles, log-sum-exp [nq, b, h, bq] float32).

    ``kv_len`` may be traced (ring attention). Query rows that see no valid key get out 0 and
    lse -inf, so partial results over key blocks can be merged safely.
    """
    scale = q_tiles.shape[-1] ** -0.5
    nk = k_tiles.shape[0]
    masked = _needs_mask(kv_len, k_tiles)
    out_dtype = q_tiles.dtype if out_dtype is None else out_dtype

    def one_q_tile(q_tile):
        b, h, bq, d = q_tile.shape
        q_tile = q_tile * jnp.asarray(scale, q_tile.dtype)

        def step(carry, kv):
            m, l, acc = carry  # [b, h, bq], [b, h, bq], [b, h, bq, d]
            k_tile, v_tile, index = kv
            s = _scores(q_tile, k_tile, index, kv_len, masked)  # [b, h, bq, bk]
            m_new = jnp.maximum(m, s.max(axis=-1))  # [b, h, bq]
            m_safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new)  # all-masked rows: exp(-inf) = 0
            p = jnp.exp(s - m_safe[..., None])  # [b, h, bq, bk]
            correction = jnp.exp(m - m_safe)  # [b, h, bq]
            pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v_tile.dtype), v_tile,
                            preferred_element_type=jnp.float32)  # [b, h, bq, d]
            return (m_new, l * correction + p.sum(-1), acc * correction[..., None] + pv), None

        init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
                jnp.zeros((b, h, bq, d), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(step, init, (k_tiles, v_tiles, jnp.arange(nk)))
        out = acc / jnp.where(l == 0, 1.0, l)[..., None]  # [b, h, bq, d]
        return out.astype(out_dtype), m + jnp.log(l)

    return jax.lax.map(one_q_tile, q_tiles)


def backward_tiles(q_tiles, k_tiles, v_tiles, lse, delta, d_out, kv_len):
    """Flash-attention backward of one key/value range, float32 (dq, dk, dv).

    ``lse`` [nq, b, h, bq] is the log-sum-exp over ALL keys the queries attend to (possibly more
    than these tiles: ring attention), ``delta`` = sum(d_out * out, -1) with the final output.
    Key/value tiles are the outer loop, carrying their own small dK/dV accumulators over the
    query tiles; dQ is accumulated once per key/value tile (once in total when one tile holds
    all keys, the usual CPU setting), not rewritten for every query tile.
    """
    scale = q_tiles.shape[-1] ** -0.5
    masked = _needs_mask(kv_len, k_tiles)
    q_scaled = q_tiles * jnp.asarray(scale, q_tiles.dtype)  # [nq, b, h, bq, d]

    def one_kv_tile(dq_acc, kv):
        k_tile, v_tile, index = kv  # [b, h, bk, d], [b, h, bk, d], []

        def one_q_tile(dkv, q):
            dk, dv = dkv  # [b, h, bk, d] each, float32
            q_tile, do_tile, lse_tile, delta_tile = q
            s = _scores(q_tile, k_tile, index, kv_len, masked)  # [b, h, bq, bk]
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
    return dq * scale, dk, dv  # [nq, b, h, bq, d], [nk, b, h, bk, d] x2


def output_delta(d_out, out):
    """sum(dO * O) over head_dim, float32: the softmax-backward row term [..., bq]."""
    return jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash_tiles(q_tiles, k_tiles, v_tiles, kv_len: int):
    """Attention over tiles q [nq, b, h, bq, d], k/v [nk, b, h, bk, d] -> [nq, b, h, bq, d]."""
    return forward_tiles(q_tiles, k_tiles, v_tiles, kv_len)[0]


def _flash_fwd(q_tiles, k_tiles, v_tiles, kv_len):
    out, lse = forward_tiles(q_tiles, k_tiles, v_tiles, kv_len)
    return out, (q_tiles, k_tiles, v_tiles, out, lse)


def _flash_bwd(kv_len, residuals, d_out):
    """Flash-attention backward: probabilities recomputed per tile from the saved lse."""
    q_tiles, k_tiles, v_tiles, out, lse = residuals
    dq, dk, dv = backward_tiles(q_tiles, k_tiles, v_tiles, lse, output_delta(d_out, out), d_out,
                                kv_len)
    return dq.astype(q_tiles.dtype), dk.astype(k_tiles.dtype), dv.astype(v_tiles.dtype)


_flash_tiles.defvjp(_flash_fwd, _flash_bwd)
