"""3D rotary position embedding of Wan: separate frequency bands for frame, height and width.

The head dimension is split as h = w = 2 * (head_dim // 6), t = head_dim - 2h (44/42/42 for
head_dim 128). Each band rotates interleaved pairs (x[2i], x[2i+1]) by angle
pos * theta^(-2i / band). With CamClone frame concatenation the frame positions simply run on
across the segments (target 0..F-1, camera reference F..2F-1, content reference 2F..3F-1) while
height/width positions repeat, exactly as the public release does.

Angles are computed in float64 numpy at trace time (the shapes are static), as diffusers does,
then carried in float32.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) rotary band widths of one head."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


@dataclasses.dataclass(frozen=True)
class Segment:
    """One part of the token sequence: its token grid and its RoPE positions.

    Token (i, j, l) of ``grid`` (frames, height, width) sits at RoPE positions
    (t0 + i, stride * j, stride * l).
    """

    grid: tuple[int, int, int]
    t0: int = 0
    stride: int = 1

    @property
    def length(self) -> int:
        return math.prod(self.grid)


def _angles(positions: np.ndarray, band: int, theta: float) -> np.ndarray:
    """Angles [n, band // 2] of one axis band at integer positions [n], float64."""
    inv_freq = 1.0 / theta ** (np.arange(0, band, 2, dtype=np.float64)[: band // 2] / band)
    return positions.astype(np.float64)[:, None] * inv_freq[None, :]


def segment_rope(segments, head_dim: int, theta: float = 10000.0,
                 max_seq_len: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables [sum of segment lengths, head_dim // 2] (float32), segments in order.

    Within a segment, tokens are in row-major (frame, height, width) order, pairs in [t | h | w]
    band order. Only the small per-axis tables are constants (computed in float64); the full
    tables are broadcast in the graph, so a long sequence adds no large constant to the
    compiled program.
    """
    bands = axis_dims(head_dim)
    expand = [(slice(None), None, None), (None, slice(None), None), (None, None, slice(None))]
    cos, sin = [], []
    for seg in segments:
        f, h, w = seg.grid
        positions = (seg.t0 + np.arange(f), seg.stride * np.arange(h), seg.stride * np.arange(w))
        if max_seq_len is not None and max(int(p[-1]) + 1 for p in positions) > max_seq_len:
            raise ValueError(f"token grid {seg.grid} at positions t0={seg.t0}, stride "
                             f"{seg.stride} exceeds rope_max_seq_len {max_seq_len} on some axis")
        angles = [_angles(p, band, theta) for p, band in zip(positions, bands)]  # [n, band/2]

        def table(fn):
            parts = [jnp.broadcast_to(jnp.asarray(fn(a), jnp.float32)[idx],
                                      (f, h, w, a.shape[1]))
                     for a, idx in zip(angles, expand)]  # [f, h, w, band/2] each
            return jnp.concatenate(parts, axis=-1).reshape(f * h * w, head_dim // 2)  # [n, d/2]

        cos.append(table(np.cos))
        sin.append(table(np.sin))
    if len(cos) == 1:
        return cos[0], sin[0]
    return jnp.concatenate(cos, axis=0), jnp.concatenate(sin, axis=0)


def rope_tables(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                max_seq_len: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables [frames * height * width, head_dim // 2] for one contiguous
    (frames, height, width) token grid (see ``segment_rope``)."""
    return segment_rope([Segment(tuple(grid))], head_dim, theta, max_seq_len)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotates interleaved pairs of x [batch, length, heads, head_dim] by the tables [L, d/2]."""
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)  # [b, L, h, d/2, 2]
    x1, x2 = pairs[..., 0], pairs[..., 1]  # [b, L, h, d/2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]  # [1, L, 1, d/2]
    out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)  # [b, L, h, d/2, 2]
    return out.reshape(x.shape).astype(dtype)
