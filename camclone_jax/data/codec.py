"""Latent codecs: what turns pixel clips into the DiT's latents and back.

A codec has ``encode(frames [B, F, H, W, 3] in [-1, 1]) -> latents [B, f, h, w, C]`` and
``decode(latents) -> frames [B, F, H, W, 3]`` (jax arrays, jit-compatible) and the attributes
``latent_channels``, ``temporal_factor``, ``spatial_factor``, ``to_dict()``.

``PixelCodec`` is the documented pixel-space switch: no learned weights. It keeps frames
0, 4, 8, ... (``temporal_factor``; F = 1 + 4k -> f = 1 + k latent frames, the Wan VAE's
geometry) and folds each ``spatial_factor`` x ``spatial_factor`` pixel block into channels
(space-to-depth, channel index = (dy * s + dx) * 3 + rgb), so C = 3 s^2 (192 for s = 8).
Values are scaled by ``scale`` (so a [-1, 1] video has about unit variance). Decoding unfolds the
blocks and linearly interpolates the dropped frames; encode(decode(z)) == z exactly.

The Wan VAE (models/vae.py) is the codec of real training; its latents are normally
pre-encoded into latent-kind records by ``python -m camclone_jax.data.encode``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from einops import rearrange


@dataclasses.dataclass(frozen=True)
class PixelCodec:
    """Space-to-depth pixels with temporal subsampling (see the module docstring)."""

    spatial_factor: int = 8
    temporal_factor: int = 4
    scale: float = 2.0

    @property
    def latent_channels(self) -> int:
        return 3 * self.spatial_factor ** 2

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(f, h, w) of a clip of ``frames`` x ``height`` x ``width`` pixels."""
        s, r = self.spatial_factor, self.temporal_factor
        if (frames - 1) % r or height % s or width % s:
            raise ValueError(f"clip {frames}x{height}x{width}: frames must be 1 + {r}k and height, "
                             f"width multiples of {s} for the pixel codec")
        return 1 + (frames - 1) // r, height // s, width // s

    def encode(self, frames):
        """[B, F, H, W, 3] in [-1, 1] -> [B, 1 + (F-1)/r, H/s, W/s, 3 s^2]."""
        self.latent_shape(*frames.shape[1:4])
        keep = frames[:, ::self.temporal_factor]  # [B, f, H, W, 3]
        s = self.spatial_factor
        z = rearrange(keep, "b f (h p) (w q) c -> b f h w (p q c)", p=s, q=s)  # [B, f, h, w, C]
        return z.astype(jnp.float32) * self.scale

    def decode(self, latents):
        """[B, f, h, w, 3 s^2] -> [B, 1 + r (f-1), h s, w s, 3], clipped to [-1, 1]."""
        s, r = self.spatial_factor, self.temporal_factor
        if latents.shape[-1] != self.latent_channels:
            raise ValueError(f"pixel codec latents need {self.latent_channels} channels, "
                             f"got shape {latents.shape}")
        x = rearrange(latents / self.scale, "b f h w (p q c) -> b f (h p) (w q) c", p=s, q=s)
        if x.shape[1] > 1:  # linear interpolation between kept frames
            w = (jnp.arange(r) / r)[None, None, :, None, None, None]  # [1, 1, r, 1, 1, 1]
            a, b = x[:, :-1, None], x[:, 1:, None]  # [B, f-1, 1, H, W, 3]
            mid = rearrange((1 - w) * a + w * b, "b f r h w c -> b (f r) h w c")
            x = jnp.concatenate([mid, x[:, -1:]], axis=1)  # [B, F, H, W, 3]
        return jnp.clip(x, -1.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": "pixel", **dataclasses.asdict(self)}


def codec_from_dict(spec: dict):
    """The codec a ``to_dict()`` (or a config's ``codec`` entry) describes."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind == "pixel":
        return PixelCodec(**spec)
    raise ValueError(f"unknown codec kind {kind!r}; known: 'pixel' (Wan VAE latents come "
                     "pre-encoded: data.kind='latent')")
