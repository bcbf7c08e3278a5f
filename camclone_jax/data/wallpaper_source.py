"""The wallpaper world (``data.wallpaper``) as a procedural Grain source of CamClone triplets.

Example i is rendered from (seed, i) alone, in numpy on the host (no jax: it runs in Grain's
worker processes too), so the pipeline treats it like a record: shuffling is unnecessary (each
example is already an independent draw), a resumed loader continues at the same index, and
the multi-process host slicing of ``data.pipeline`` hands each process the same examples that
one process would see. Each example, in the pixel codec's latents (``world.codec``: one cell a
token of a patch-1 DiT):

  target, camera_ref, content_ref  float32 [f, h, w, C]  (f latent frames, C = 3 cell_px^2)
  i2v_latents                      float32 [f, h, w, C]  the target's frame 0, zeros after
  first_frame                      float32 [H, W, 3]     pixels in [-1, 1]
  in_first_view                    float32 [f, h, w]     the fraction of each target token's
                                                         pixels frame 0 showed (all ones when
                                                         the view wraps)
  task                             int32                 0 I2V, 1 V2V (a fraction v2v_ratio)
  index                            int64                 i

The target films wallpaper B along a camera path, the camera reference films another wallpaper
A along the same path, the content video films B at another constant velocity (its frame 0 is
the target's). Paths: "constant" (the training kind: one velocity in {-m..m}^2 cells per latent
frame), "path" (a new velocity at every latent step: never trained), "mixed" (even i constant,
odd i path: the held-out split). The curriculum aid: with probability ``same_scene_at(step)``
the camera reference films B itself (copying is learnt first, then reading), where ``step`` is
the optimizer step the example belongs to (i // examples_per_step: the global position in the
stream, since the order is the index) and the probability decays linearly from ``same_scene``
to 0 over ``same_scene_steps`` (0: constant).
"""
from __future__ import annotations


import numpy as np

from camclone_jax.data.curriculum import Curriculum
from camclone_jax.data.wallpaper import WallpaperWorld

PATHS = ("constant", "path", "mixed")


def wallpaper_np(rng: np.random.Generator, world: WallpaperWorld) -> np.ndarray:
    """One random wallpaper [H, W, 3] in [-1, 1] (numpy; the texture of ``world``), H, W its
    ``scene_size`` (the view's size unless ``scene_scale`` > 1)."""
    h, w = world.scene_size
    if world.texture == "smooth":
        fy = np.fft.fftfreq(h)[:, None, None]  # [H, 1, 1] cycles per pixel
        fx = np.fft.fftfreq(w)[None, :, None]  # [1, W, 1]
        gain = np.exp(-2.0 * (np.pi * world.blur_px) ** 2 * (fy ** 2 + fx ** 2))  # [H, W, 1]
        field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w, 3)), axes=(0, 1)) * gain,
                             axes=(0, 1)).real  # [H, W, 3]
        return np.clip(0.5 * field / field.std(), -1.0, 1.0).astype(np.float32)
    rows, cols = (world.cells[0] * world.sub * world.scene_scale,
                  world.cells[1] * world.sub * world.scene_scale)
    blocks = rng.uniform(-1.0, 1.0, (rows, cols, 3)).astype(np.float32)  # [rows, cols, 3]
    rep = world.cell_px // world.sub
    return np.repeat(np.repeat(blocks, rep, axis=0), rep, axis=1)  # [H, W, 3]


def pixel_shifts(world: WallpaperWorld, steps_cells: np.ndarray) -> np.ndarray:
    """Cumulative shifts [f, 2] in pixels ((dy, dx), frame 0 unmoved) of per-latent-step
    velocities ``steps_cells`` [f - 1, 2]."""
    return np.concatenate([np.zeros((1, 2), np.int64),
                           np.cumsum(steps_cells, axis=0) * world.step])  # [f, 2]


def in_first_view(world: WallpaperWorld, steps_cells: np.ndarray) -> np.ndarray:
    """Fraction [f, h, w] of each latent token's pixels that frame 0 showed, along velocities
    ``steps_cells`` [f - 1, 2]: view pixel (y, x) of frame k shows scene pixel (y - dy, x - dx)
    (mod the scene), which frame 0 showed iff it lies in the top-left view. All ones when the
    view wraps (``scene_scale`` 1)."""
    shifts = pixel_shifts(world, steps_cells)  # [f, 2]
    (h, w), (sh, sw), s = world.size, world.scene_size, world.cell_px
    rows = (np.arange(h)[None, :] - shifts[:, :1]) % sh < h  # [f, H]
    cols = (np.arange(w)[None, :] - shifts[:, 1:]) % sw < w  # [f, W]
    seen = (rows[:, :, None] & cols[:, None, :]).astype(np.float32)  # [f, H, W]
    return seen.reshape(len(shifts), h // s, s, w // s, s).mean((2, 4))  # [f, h, w]


def latent_clip(wall: np.ndarray, world: WallpaperWorld, steps_cells: np.ndarray) -> np.ndarray:
    """The latent frames [f, h, w, C] of wallpaper ``wall`` (the scene) filmed along
    per-latent-step velocities ``steps_cells`` [f - 1, 2] (cells, (dy, dx)): frame k is the
    top-left view of the wallpaper rolled by the cumulative shift in whole pixels, then the
    pixel codec's space-to-depth and scale."""
    shifts = pixel_shifts(world, steps_cells)  # [f, 2] pixels
    f, (h, w), s = len(shifts), world.size, world.cell_px
    frames = np.stack([np.roll(wall, tuple(d), axis=(0, 1))[:h, :w]
                       for d in shifts])  # [f, H, W, 3] the view of the moved scene
    z = frames.reshape(f, h // s, s, w // s, s, 3).transpose(0, 1, 3, 2, 4, 5)  # [f, h, w, s, s, 3]
    return z.reshape(f, h // s, w // s, 3 * s * s) * np.float32(world.codec.scale)  # [f, h, w, C]


class WallpaperSource:
    """Random-access source of wallpaper-world triplets; example i from (seed, i) alone."""

    renders_examples = True  # data.pipeline: elements are examples, not records to decode

    def __init__(self, world: WallpaperWorld, *, seed: int, length: int,
                 v2v_ratio: float = 0.5, paths: str = "constant",
                 curriculum: Curriculum = Curriculum()):
        if paths not in PATHS:
            raise ValueError(f"wallpaper paths must be one of {PATHS}, got {paths!r}")
        if not 0.0 <= v2v_ratio <= 1.0 or not 0.0 <= curriculum.same_scene <= 1.0:
            raise ValueError("v2v_ratio and same_scene must be in [0, 1]")
        self.world, self.seed, self.length = world, seed, length
        self.v2v_ratio, self.paths, self.curriculum = v2v_ratio, paths, curriculum
        self._table = world.velocities()  # [(2m+1)^2, 2]

    def __len__(self) -> int:
        return self.length

    def path(self, rng: np.random.Generator, index: int) -> np.ndarray:
        """Per-latent-step velocities [f - 1, 2] of example ``index``'s camera."""
        n = self.world.latent_frames - 1
        varying = self.paths == "path" or (self.paths == "mixed" and index % 2 == 1)
        picks = rng.integers(len(self._table), size=n if varying else 1)
        return np.broadcast_to(self._table[picks], (n, 2)).copy()  # [f - 1, 2]

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"example {index} outside [0, {self.length})")
        rng = np.random.default_rng([self.seed, index])
        world = self.world
        wall_b = wallpaper_np(rng, world)  # [H, W, 3] the target's scene
        wall_a = wallpaper_np(rng, world)  # [H, W, 3] the camera reference's scene
        step = index // self.curriculum.examples_per_step
        if rng.random() < self.curriculum.at(step):
            wall_a = wall_b
        steps = self.path(rng, index)  # [f - 1, 2]
        other = self._table[rng.integers(len(self._table))]  # [2] the content video's velocity
        task = np.int32(rng.random() < self.v2v_ratio)
        target = latent_clip(wall_b, world, steps)  # [f, h, w, C]
        content = latent_clip(wall_b, world, np.repeat(other[None], len(steps), 0))
        i2v = np.zeros_like(target)
        i2v[0] = target[0]
        return {"target": target, "camera_ref": latent_clip(wall_a, world, steps),
                "content_ref": content, "i2v_latents": i2v,
                "first_frame": wall_b[:world.size[0], :world.size[1]],
                "in_first_view": in_first_view(world, steps),
                "task": task, "index": np.int64(index)}
