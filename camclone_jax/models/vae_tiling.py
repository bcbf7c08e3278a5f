"""Spatial tiling with linear blending, for the VAE's large frames.

A frame too large to encode or decode at once is cut into overlapping full-size tiles (the last
tile of a row or column is moved flush with the border, so every tile has the same shape and one
compiled program serves them all); the tiles run one after another in a ``lax.map`` and their
outputs are blended with weights that ramp linearly across each overlap and sum to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of full-size tiles covering ``size``; the last one is flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile] if starts[-1] != size - tile else starts


def tile_weights(starts: list[int], tile: int, size: int) -> np.ndarray:
    """Blend weights [n, tile] per tile along one axis: linear ramps over the overlaps, summing
    to one at every position (a tile's ramp toward a neighbour spans their overlap)."""
    tile = min(tile, size)
    w = np.ones((len(starts), tile), np.float64)
    pos = np.arange(tile)
    for k, s in enumerate(starts):
        if k > 0 and (overlap := starts[k - 1] + tile - s) > 0:
            w[k] = np.minimum(w[k], (pos + 1) / (overlap + 1))
        if k + 1 < len(starts) and (overlap := s + tile - starts[k + 1]) > 0:
            w[k] = np.minimum(w[k], (tile - pos) / (overlap + 1))
    total = np.zeros(size)
    for k, s in enumerate(starts):
        total[s:s + tile] += w[k]
    return np.stack([w[k] / total[s:s + tile] for k, s in enumerate(starts)])


def tiled_apply(fn, x, tile: tuple[int, int], stride: tuple[int, int], scale: float):
    """Applies ``fn`` to overlapping spatial tiles of x and blends the results linearly.

    x [b, f, H, W, c]; ``fn`` maps a tile [b, f, th, tw, c] to [b, f', th*scale, tw*scale, c'];
    tiles are full-size (the last one per axis is flush with the border), run one after another
    with ``lax.map`` and blended with `tile_weights` scaled to the output grid.
    """
    b, _, height, width, _ = x.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    rows, cols = tile_starts(height, th, stride[0]), tile_starts(width, tw, stride[1])
    tiles = jnp.stack([x[:, :, i:i + th, j:j + tw] for i in rows for j in cols])  # [n, b, f, th, tw, c]
    outs = jax.lax.map(fn, tiles)  # [n, b, f', th*s, tw*s, c']
    oth, otw = outs.shape[3], outs.shape[4]
    out_rows, out_cols = [round(i * scale) for i in rows], [round(j * scale) for j in cols]
    out_h, out_w = round(height * scale), round(width * scale)
    wr = tile_weights(out_rows, oth, out_h)  # [rows, oth]
    wc = tile_weights(out_cols, otw, out_w)  # [cols, otw]
    out = jnp.zeros((b, outs.shape[2], out_h, out_w, outs.shape[5]), outs.dtype)
    for r, i in enumerate(out_rows):
        for c, j in enumerate(out_cols):
            weight = jnp.asarray(np.outer(wr[r], wc[c])[..., None], outs.dtype)  # [oth, otw, 1]
            out = out.at[:, :, i:i + oth, j:j + otw].add(outs[r * len(cols) + c] * weight)
    return out  # [b, f', H*s, W*s, c']
