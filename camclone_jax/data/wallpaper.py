"""The wallpaper world: camera cloning small enough to learn and to measure on a 2-core CPU.

A scene is a periodic wallpaper exactly the size of the frame, ``cells`` square cells of
``cell_px`` pixels: with ``texture`` "blocks" each cell is split into ``sub`` x ``sub`` blocks of
one random colour (uniform in [-1, 1]^3); with "smooth" it is periodic RGB noise blurred by a
Gaussian of ``blur_px`` pixels (std 0.5, clipped to [-1, 1]). The camera pans and tilts over it
at a constant integer velocity v in {-m..m}^2 (m = ``max_speed``) steps of ``step_px`` pixels
per latent frame, wrapping around: a camera turning in a world at infinity where nothing new
enters the view, so every frame is predictable from the first frame and the camera's motion.
In pixel frames the wallpaper moves v * step_px / temporal_factor pixels per frame (a
fractional shift is a phase ramp on the smooth texture's spectrum); the pixel codec
(``PixelCodec(cell_px, temporal_factor)``) keeps every ``temporal_factor``-th frame, so latent
frame k is the wallpaper rolled by k v step_px whole pixels, and one latent cell is one token of
a patch-1 DiT.

With ``scene_scale`` s > 1 (the training source only) the wallpaper is s views wide and high
and the camera sees its top-left view, so content that frame 0 did not show enters the view
as it moves, as in a rendered world.

A CamClone triplet: the target films wallpaper B, the camera reference films another wallpaper
A with the same velocity, the first frame is the target's frame 0 (I2V). The camera's pose in
frame k is the rotation that moves the image by the target's cumulative shift (``shift_c2w``:
pan -atan(dx / f), tilt atan(dy / f), f the focal length in pixels of a ``fov_deg`` lens), the
reading that ``eval.shift_camera`` takes from any video.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.data.codec import PixelCodec
from camclone_jax.data.synthetic.trajectories import rot_x, rot_y


@dataclasses.dataclass(frozen=True)
class WallpaperWorld:
    """Geometry of the wallpaper world (see the module docstring)."""

    cells: tuple[int, int] = (4, 4)  # wallpaper = frame, in cells (rows, columns)
    cell_px: int = 4  # pixels per cell side: the pixel codec's spatial factor
    sub: int = 2  # colour blocks per cell side
    latent_frames: int = 5  # frames of a clip in latents (pixel frames: 1 + r (f - 1))
    temporal_factor: int = 4  # the pixel codec's frame subsampling
    max_speed: int = 1  # steps per latent frame, each axis
    fov_deg: float = 60.0  # horizontal field of view of the camera reading
    texture: str = "blocks"  # "blocks" or "smooth"
    blur_px: float = 2.0  # smoothness of the "smooth" texture
    step_px: int = 0  # pixels per latent frame per unit of velocity (0: cell_px)
    scene_scale: int = 1  # the scene is this many views wide and high (1: the view wraps)

    def __post_init__(self):
        if self.texture not in ("blocks", "smooth"):
            raise ValueError(f"texture must be 'blocks' or 'smooth', got {self.texture!r}")
        if self.scene_scale < 1:
            raise ValueError(f"scene_scale must be >= 1, got {self.scene_scale}")
        if self.cell_px % self.sub:
            raise ValueError(f"cell_px {self.cell_px} is not a multiple of sub {self.sub}")
        if self.texture == "blocks" and self.step % self.temporal_factor:
            raise ValueError("blocks move whole pixels each frame: step_px (or cell_px) must be "
                             "a multiple of temporal_factor")

    @property
    def step(self) -> int:
        """Pixels per latent frame per unit of velocity."""
        return self.step_px or self.cell_px

    @property
    def codec(self) -> PixelCodec:
        return PixelCodec(spatial_factor=self.cell_px, temporal_factor=self.temporal_factor)

    @property
    def frames(self) -> int:
        """Pixel frames of a clip."""
        return 1 + self.temporal_factor * (self.latent_frames - 1)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.cells[0] * self.cell_px, self.cells[1] * self.cell_px

    @property
    def scene_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the whole wallpaper, of which the camera sees a view
        of ``size``: with ``scene_scale`` > 1 content the first frame did not show enters the
        view as the camera moves (the training source, ``wallpaper_source``, only)."""
        return self.size[0] * self.scene_scale, self.size[1] * self.scene_scale

    def check_wrapping(self, what: str):
        """Raises for ``scene_scale`` > 1 in a part of the world that renders wrapping views."""
        if self.scene_scale != 1:
            raise ValueError(f"{what} renders views that wrap around (scene_scale 1); this "
                             f"world has scene_scale {self.scene_scale}, which only the "
                             "training source (data/wallpaper_source.py) renders")

    @property
    def focal_px(self) -> float:
        return self.size[1] / 2 / math.tan(math.radians(self.fov_deg) / 2)

    def velocities(self) -> np.ndarray:
        """Every velocity (cells per latent frame, (dy, dx)): [(2m+1)^2, 2] int."""
        r = np.arange(-self.max_speed, self.max_speed + 1)
        return np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "cells": list(self.cells)}


def smooth_spectra(key, n: int, h: int, w: int, blur: float):
    """Spectra [n, H, W, 3] of n periodic RGB fields: white noise blurred by a Gaussian of
    ``blur`` pixels, scaled so that each field has unit variance."""
    noise = jax.random.normal(key, (n, h, w, 3))
    fy = jnp.fft.fftfreq(h)[:, None, None]  # [H, 1, 1] cycles per pixel
    fx = jnp.fft.fftfreq(w)[None, :, None]  # [1, W, 1]
    gain = jnp.exp(-2.0 * (jnp.pi * blur) ** 2 * (fy ** 2 + fx ** 2))  # [H, W, 1]
    spec = jnp.fft.fft2(noise, axes=(1, 2)) * gain  # [n, H, W, 3]
    field = jnp.fft.ifft2(spec, axes=(1, 2)).real  # [n, H, W, 3]
    return spec / jnp.std(field, axis=(1, 2, 3), keepdims=True)  # unit std fields


def wallpapers(key, world: WallpaperWorld, n: int):
    """n random wallpapers [n, H, W, 3] in [-1, 1] (jax)."""
    world.check_wrapping("wallpaper.wallpapers")
    if world.texture == "smooth":
        spec = smooth_spectra(key, n, *world.size, world.blur_px)  # [n, H, W, 3]
        field = jnp.fft.ifft2(spec, axes=(1, 2)).real  # [n, H, W, 3] unit std
        return jnp.clip(0.5 * field, -1.0, 1.0)
    rows, cols = world.cells[0] * world.sub, world.cells[1] * world.sub
    blocks = jax.random.uniform(key, (n, rows, cols, 3), minval=-1.0, maxval=1.0)
    rep = world.cell_px // world.sub
    return jnp.repeat(jnp.repeat(blocks, rep, axis=1), rep, axis=2)  # [n, H, W, 3]


def translated(walls, shifts):
    """Like ``rolled`` for fractional ``shifts`` [n, f, 2]: a phase ramp on the spectrum (exact
    for whole pixels, band-limited in between)."""
    return translated_spectra(jnp.fft.fft2(walls, axes=(1, 2)), shifts)  # [n, f, H, W, 3]


def translated_spectra(spec, shifts):
    """Frames [n, f, H, W, 3] of the fields with spectra ``spec`` [n, H, W, 3] moved by
    ``shifts`` [n, f, 2] pixels (dy, dx) each frame; content moves towards +y / +x."""
    h, w = spec.shape[1:3]
    fy = jnp.fft.fftfreq(h)[:, None]  # [H, 1]
    fx = jnp.fft.fftfreq(w)[None, :]  # [1, W]
    dy, dx = shifts[..., 0, None, None], shifts[..., 1, None, None]  # [n, f, 1, 1]
    phase = jnp.exp(-2j * jnp.pi * (fy * dy + fx * dx))  # [n, f, H, W]
    return jnp.fft.ifft2(spec[:, None] * phase[..., None], axes=(2, 3)).real  # [n, f, H, W, 3]


def rolled(walls, shifts):
    """Frames [n, f, H, W, c] of wallpapers ``walls`` [n, H, W, c] circularly moved by integer
    ``shifts`` [n, f, 2] pixels (dy, dx) in frame k (content moves towards +y / +x)."""
    n, h, w = walls.shape[:3]
    rows = (jnp.arange(h)[None, None, :] - shifts[..., 0, None]) % h  # [n, f, H]
    cols = (jnp.arange(w)[None, None, :] - shifts[..., 1, None]) % w  # [n, f, W]
    idx = jnp.arange(n)[:, None, None, None]  # [n, 1, 1, 1]
    return walls[idx, rows[..., :, None], cols[..., None, :]]  # [n, f, H, W, c]


def pixel_shifts(world: WallpaperWorld, velocity, latent: bool):
    """Cumulative shifts in pixels [n, frames, 2] of velocities [n, 2] (cells per latent frame):
    at the latent frames (``latent``) or at every pixel frame."""
    frames = world.latent_frames if latent else world.frames
    step = world.step if latent else world.step / world.temporal_factor
    k = jnp.arange(frames)[None, :, None]  # [1, frames, 1]
    return k * jnp.asarray(velocity)[:, None, :] * step  # [n, frames, 2]


def path_shifts(world: WallpaperWorld, steps_cells) -> np.ndarray:
    """Cumulative shifts in pixels [frames, 2] at every pixel frame of a camera path given as
    per-latent-step velocities ``steps_cells`` [latent_frames - 1, 2] (cells, (dy, dx)): the
    motion of step k is spread evenly over its ``temporal_factor`` pixel frames."""
    steps = np.asarray(steps_cells, np.int64).reshape(world.latent_frames - 1, 2)
    per_frame = np.repeat(steps * (world.step / world.temporal_factor),
                          world.temporal_factor, axis=0)  # [frames - 1, 2] pixels per frame
    return np.concatenate([np.zeros((1, 2)), np.cumsum(per_frame, axis=0)])


def render_clip(wall: np.ndarray, world: WallpaperWorld, velocity) -> np.ndarray:
    """Every pixel frame of one clip: uint8 [frames, H, W, 3] of wallpaper ``wall`` [H, W, 3]
    in [-1, 1] panned at ``velocity`` (dy, dx) cells per latent frame, or along a path of
    per-latent-step velocities [latent_frames - 1, 2]."""
    world.check_wrapping("wallpaper.render_clip")
    velocity = np.asarray(velocity)
    steps = np.broadcast_to(velocity, (world.latent_frames - 1, 2)) if velocity.ndim == 1 \
        else velocity
    shifts = path_shifts(world, steps)[None]  # [1, F, 2]
    if np.all(shifts == np.round(shifts)):
        frames = rolled(jnp.asarray(wall)[None], jnp.asarray(shifts, jnp.int32))
    else:
        frames = translated(jnp.asarray(wall, jnp.float32)[None], jnp.asarray(shifts))
    frames = np.asarray(frames)[0]  # [F, H, W, 3]
    return np.clip(np.round((frames + 1.0) * 127.5), 0, 255).astype(np.uint8)


def shift_c2w(shifts_px: np.ndarray, focal_px: float) -> np.ndarray:
    """Camera poses [F, 4, 4] (OpenCV axes, c2w, frame 0 the identity) of a camera whose image
    has moved by ``shifts_px`` [F, 2] (dy, dx) since frame 0: pan -atan(dx / f) about y, then
    tilt atan(dy / f) about x."""
    out = np.tile(np.eye(4), (len(shifts_px), 1, 1))
    for i, (dy, dx) in enumerate(np.asarray(shifts_px, np.float64)):
        out[i, :3, :3] = rot_y(-math.atan(dx / focal_px)) @ rot_x(math.atan(dy / focal_px))
    return out
