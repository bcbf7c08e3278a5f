"""Sequence (context) parallel attention over the mesh's context axis, inside ``shard_map``.

The token sequence is split into ``n`` equal chunks over the mesh axis that the logical axis
"length" maps to (``context`` in sharding.DEFAULT_RULES); batch stays on the "batch" axes
(data, fsdp) and heads on the "heads" axis (tensor), so the shard_map specs are the activation
sharding the rest of the model already uses. Two algorithms:

  * Ulysses (DeepSpeed-Ulysses): an all-to-all turns [b, L/n, h, d] into [b, L, h/n, d]; each
    shard runs the local backend (xla / flash / cudnn) over the WHOLE sequence for h/n heads; a
    second all-to-all turns the output back. Two collectives per call, volume ~ activations/n;
    needs the heads per tensor shard to divide by n (a clear error otherwise: use "ring").
  * Ring attention: queries stay put; key/value chunks travel round the ring with ``ppermute``
    (n - 1 hops) and each hop is merged into the output with an online softmax (running
    log-sum-exp). The backward (a custom VJP) passes the chunks round again, each travelling
    with its own dK/dV accumulator, and a last hop brings the accumulators home. Any head
    count; every hop runs the blockwise (flash) tile kernel of attention_kernels.py on the local
    [L/n x L/n] piece, with its tiles (the "xla" backend uses one tile per chunk, the same math
    as the reference; "cudnn" is not used here because it does not return the log-sum-exp).

Uneven lengths: sequences are zero-padded to a multiple of n before sharding; padded keys are
masked out (Ulysses: a static key length; ring: the valid count of the chunk in flight, traced
from its owner's index) and padded query rows are dropped from the output.

Cross-attention (``shard_kv=False``): the video queries are sharded as above, but the short text
/ image keys and values stay whole on every shard (512 + 257 tokens against ~10^5 queries), so
each shard attends its query chunk to all keys with no collective at all, whatever the mode;
their gradients are summed over the context axis by shard_map's transpose. ``shard_kv=True``
with a different key length also works (both algorithms handle lq != lk).

The mesh is the ambient one: ``jax.set_mesh(mesh)`` (jax >= 0.7) or the legacy ``with mesh:``.
Without a mesh, without a context axis, or with a context axis of size 1 the call falls back to
the local backend.
"""

from __future__ import annotations

import functools
import inspect
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from camclone_jax.models.attention_kernels import (backward_tiles, forward_tiles, from_tiles,
                                                   local_attention, output_delta, pad_to,
                                                   to_tiles)
from camclone_jax.sharding import DEFAULT_RULES

MODES = ("ulysses", "ring")


# ----------------------------------------------------------------------------- mesh plumbing
def ambient_mesh():
    """The mesh set by ``jax.set_mesh`` or by the legacy ``with mesh:``; None when neither."""
    get_abstract = getattr(jax.sharding, "get_abstract_mesh", None)
    if get_abstract is not None:
        mesh = get_abstract()
        if mesh is not None and not mesh.empty:
            return mesh
    try:  # `with mesh:` only sets the legacy thread-local resource env (deprecated in jax 0.7+)
        from jax._src import mesh as mesh_lib

        physical = mesh_lib.thread_resources.env.physical_mesh
        return None if physical.empty else physical
    except (ImportError, AttributeError):
        return None


def _shard_map(fn, mesh, in_specs, out_specs):
    """``shard_map`` across jax versions (jax.shard_map / experimental; check_vma / check_rep)."""
    if hasattr(jax, "shard_map"):
        smap = jax.shard_map
    else:  # jax < 0.6
        from jax.experimental.shard_map import shard_map as smap
    params = inspect.signature(smap).parameters
    check = {"check_vma": False} if "check_vma" in params else {"check_rep": False}
    return smap(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **check)


def _active_rules():
    """The Flax logical-axis rules in force, else sharding.DEFAULT_RULES."""
    return nn.get_logical_axis_rules() or DEFAULT_RULES


def _as_tuple(axes):
    if axes is None:
        return ()
    return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def _fit(axes, mesh_shape, size: int):
    """The leading mesh axes of ``axes`` present in the mesh whose product divides ``size``."""
    kept = []
    for a in _as_tuple(axes):
        if a in mesh_shape and mesh_shape[a] > 1 and size % (math.prod(
                mesh_shape[x] for x in kept) * mesh_shape[a]) == 0:
            kept.append(a)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else tuple(kept)


def plan(mesh, batch: int, heads: int):
    """(context axis, its size, batch mesh axes, heads mesh axes) for these shapes.

    Axes come from the logical rules of "batch", "length" and "heads"; an axis is dropped (its
    dimension replicated) where it is absent from the mesh or does not divide the dimension.
    """
    if mesh is None:
        return None, 1, None, None
    shape = dict(mesh.shape)
    spec = nn.logical_to_mesh_axes(("batch", "length", "heads"), _active_rules())
    batch_axes, length_axes, head_axes = (_as_tuple(s) for s in spec)
    length_axes = tuple(a for a in length_axes if a in shape and shape[a] > 1)
    if not length_axes:
        return None, 1, None, None
    if len(length_axes) > 1:
        raise ValueError(f"context parallel attention needs one mesh axis for 'length', got "
                         f"{length_axes}")
    axis = length_axes[0]
    return axis, shape[axis], _fit(batch_axes, shape, batch), _fit(head_axes, shape, heads)


# ----------------------------------------------------------------------------- entry point
def context_parallel_attention(q, k, v, *, mode: str, backend: str, block_q: int = 128,
                               block_kv: int = 8192, shard_kv: bool = True, mesh=None):
    """Attention [b, lq, h, d] x [b, lk, h, d] -> [b, lq, h, d] sharded over the context axis.

    ``mode`` is "ulysses" or "ring"; ``backend`` a concrete local backend (xla/flash/cudnn);
    ``mesh`` defaults to the ambient mesh. See the module docstring for the algorithms.
    """
    if mode not in MODES:
        raise ValueError(f"context parallel mode {mode!r} is not one of {MODES}")
    local = functools.partial(local_attention, backend=backend, block_q=block_q,
                              block_kv=block_kv)
    mesh = ambient_mesh() if mesh is None else mesh
    b, lq, h, _ = q.shape
    lk = k.shape[1]
    axis, n, batch_axes, head_axes = plan(mesh, b, h)
    if n == 1:
        return local(q, k, v)

    heads_per_shard = h // math.prod(dict(mesh.shape)[a] for a in _as_tuple(head_axes))
    if mode == "ulysses" and shard_kv and heads_per_shard % n:
        raise ValueError(
            f"Ulysses attention splits the {heads_per_shard} heads of each tensor shard over the "
            f"{n}-way '{axis}' axis, which does not divide them; use context_parallel='ring' "
            f"or a context axis size that divides {heads_per_shard}")

    q_spec = P(batch_axes, axis, head_axes, None)
    kv_spec = P(batch_axes, axis if shard_kv else None, head_axes, None)
    q_pad, _ = pad_to(q, n)  # [b, lq_pad, h, d]
    if shard_kv:
        k, _ = pad_to(k, n)  # [b, lk_pad, h, d]
        v, _ = pad_to(v, n)  # [b, lk_pad, h, d]
        if mode == "ulysses":
            shard_fn = functools.partial(_ulysses_shard, axis=axis, kv_len=lk, local=local)
        else:
            block_q, block_kv = (block_q, block_kv) if backend != "xla" else (lq, lk)
            shard_fn = functools.partial(_ring_shard, axis=axis, n=n, kv_len=lk,
                                         block_q=block_q, block_kv=block_kv)
    else:
        shard_fn = local  # query chunk against all keys: no collective
    out = _shard_map(shard_fn, mesh, (q_spec, kv_spec, kv_spec), q_spec)(q_pad, k, v)
    return out[:, :lq]  # [b, lq, h, d]: padded query rows dropped


# ----------------------------------------------------------------------------- Ulysses
def _ulysses_shard(q, k, v, *, axis, kv_len: int, local):
    """Per shard: q [b, cq, h, d], k/v [b, ck, h, d] -> [b, cq, h, d] via head all-to-alls."""
    to_heads = functools.partial(jax.lax.all_to_all, axis_name=axis, tiled=True)
    q = to_heads(q, split_axis=2, concat_axis=1)  # [b, lq_pad, h/n, d]
    kv = to_heads(jnp.stack([k, v]), split_axis=3, concat_axis=2)  # [2, b, lk_pad, h/n, d]
    out = local(q, kv[0], kv[1], kv_len=kv_len)  # [b, lq_pad, h/n, d]
    return to_heads(out, split_axis=1, concat_axis=2)  # [b, cq, h, d]


# ----------------------------------------------------------------------------- ring
def _ring_shard(q, k, v, *, axis, n: int, kv_len: int, block_q: int, block_kv: int):
    """Per shard: q [b, cq, h, d], k/v [b, ck, h, d] -> [b, cq, h, d], kv chunks on a ring."""
    cq, ck = q.shape[1], k.shape[1]
    q_tiles = to_tiles(q, min(block_q, cq))  # [nq, b, h, bq, d]
    k_tiles = to_tiles(k, min(block_kv, ck))  # [nk, b, h, bk, d]
    v_tiles = to_tiles(v, min(block_kv, ck))  # [nk, b, h, bk, d]
    out = _ring_tiles(q_tiles, k_tiles, v_tiles, axis, n, kv_len, ck)  # [nq, b, h, bq, d]
    return from_tiles(out, cq)


def _hop(x, axis, n: int):
    """Sends every shard's x to the next shard on the ring (i -> i + 1 mod n)."""
    return jax.lax.ppermute(x, axis, perm=[(i, (i + 1) % n) for i in range(n)])


def _valid_keys(axis, n: int, step, kv_len: int, ck: int):
    """Valid (unpadded) keys in the chunk a shard holds after ``step`` hops (traced int)."""
    owner = (jax.lax.axis_index(axis) - step) % n
    return jnp.clip(kv_len - owner * ck, 0, ck)


def _merge(out, lse, out_j, lse_j):
    """Online-softmax merge of two partial results normalised over disjoint key sets."""
    lse_new = jnp.logaddexp(lse, lse_j)  # [nq, b, h, bq]
    safe = jnp.where(jnp.isneginf(lse_new), 0.0, lse_new)  # no valid key yet: weights 0
    w, w_j = jnp.exp(lse - safe), jnp.exp(lse_j - safe)  # [nq, b, h, bq]
    return out * w[..., None] + out_j * w_j[..., None], lse_new


def _ring_forward(q_tiles, k_tiles, v_tiles, axis, n, kv_len, ck):
    """Output tiles (q dtype) and the log-sum-exp over all keys [nq, b, h, bq]."""

    def attend(k_t, v_t, step):
        valid = _valid_keys(axis, n, step, kv_len, ck)
        return forward_tiles(q_tiles, k_t, v_t, valid, out_dtype=jnp.float32)

    def body(carry, step):
        out, lse, k_t, v_t = carry
        k_t, v_t = _hop(k_t, axis, n), _hop(v_t, axis, n)  # [nk, b, h, bk, d] each
        out, lse = _merge(out, lse, *attend(k_t, v_t, step))
        return (out, lse, k_t, v_t), None

    out, lse = attend(k_tiles, v_tiles, 0)  # own chunk first: no communication
    (out, lse, _, _), _ = jax.lax.scan(body, (out, lse, k_tiles, v_tiles), jnp.arange(1, n))
    return out.astype(q_tiles.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _ring_tiles(q_tiles, k_tiles, v_tiles, axis, n: int, kv_len: int, ck: int):
    """Ring attention over tiles q [nq, b, h, bq, d], k/v [nk, b, h, bk, d] (one shard)."""
    return _ring_forward(q_tiles, k_tiles, v_tiles, axis, n, kv_len, ck)[0]


def _ring_fwd(q_tiles, k_tiles, v_tiles, axis, n, kv_len, ck):
    out, lse = _ring_forward(q_tiles, k_tiles, v_tiles, axis, n, kv_len, ck)
    return out, (q_tiles, k_tiles, v_tiles, out, lse)


def _ring_bwd(axis, n, kv_len, ck, residuals, d_out):
    """dQ stays home; each kv chunk travels the ring again with its dK/dV accumulators."""
    q_tiles, k_tiles, v_tiles, out, lse = residuals
    delta = output_delta(d_out, out)  # [nq, b, h, bq]

    def grads(k_t, v_t, step):
        valid = _valid_keys(axis, n, step, kv_len, ck)
        return backward_tiles(q_tiles, k_t, v_t, lse, delta, d_out, valid)

    def body(carry, step):
        dq, k_t, v_t, dk, dv = carry
        k_t, v_t, dk, dv = (_hop(x, axis, n) for x in (k_t, v_t, dk, dv))
        dq_j, dk_j, dv_j = grads(k_t, v_t, step)
        return (dq + dq_j, k_t, v_t, dk + dk_j, dv + dv_j), None

    dq, dk, dv = grads(k_tiles, v_tiles, 0)  # float32
    (dq, _, _, dk, dv), _ = jax.lax.scan(body, (dq, k_tiles, v_tiles, dk, dv), jnp.arange(1, n))
    # After n - 1 hops each shard holds the chunk of its successor: one more hop takes the
    # finished dK/dV home.
    dk, dv = _hop(dk, axis, n), _hop(dv, axis, n)
    return dq.astype(q_tiles.dtype), dk.astype(k_tiles.dtype), dv.astype(v_tiles.dtype)


_ring_tiles.defvjp(_ring_fwd, _ring_bwd)
