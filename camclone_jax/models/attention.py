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

``context_parallel="ulysses" | "ring"`` splits the sequence over the mesh's context axis
(models/context_parallel.py); each shard then runs one of the backends above on its piece.
The one-device kernels live in models/attention_kernels.py, which both this dispatcher and the
sequence-parallel paths import.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from camclone_jax.models import context_parallel as cp
from camclone_jax.models.attention_kernels import LOCAL_BACKENDS, local_attention

CONTEXT_PARALLEL_MODES = ("none", "ulysses", "ring")


def resolve_backend(backend: str, dtype) -> str:
    """Maps "auto" to a concrete backend for the default device and compute dtype."""
    if backend != "auto":
        return backend
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "flash"


def dot_product_attention(q, k, v, *, backend: str = "xla", block_q: int = 128,
                          block_kv: int = 8192, context_parallel: str = "none",
                          shard_kv: bool = True):
    """Softmax(q k^T / sqrt(d)) v per head: [b, lq, h, d] x [b, lk, h, d] -> [b, lq, h, d].

    ``context_parallel`` other than "none" shards the sequence over the ambient mesh's context
    axis (a no-op without a mesh or with a context axis of size 1); ``shard_kv=False`` keeps
    keys/values whole on every shard (cross-attention to short text), see context_parallel.py.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[::2] != k.shape[::2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention shapes do not agree: q {q.shape}, k {k.shape}, v {v.shape}")
    backend = resolve_backend(backend, q.dtype)
    if backend not in LOCAL_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}")
    if context_parallel not in CONTEXT_PARALLEL_MODES:
        raise ValueError(f"context_parallel={context_parallel!r} is not one of "
                         f"{CONTEXT_PARALLEL_MODES}")
    if context_parallel != "none":
        return cp.context_parallel_attention(q, k, v, mode=context_parallel, backend=backend,
                                             block_q=block_q, block_kv=block_kv,
                                             shard_kv=shard_kv)
    return local_attention(q, k, v, backend=backend, block_q=block_q, block_kv=block_kv)
