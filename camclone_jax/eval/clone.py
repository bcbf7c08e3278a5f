"""Held-out camera-cloning scores in the wallpaper world (``data.wallpaper``).

Held-out clips: new random wallpapers (seeded apart from training's streams), on two
trajectory sets: "constant" (the training kind: one velocity in {-1..1}^2 cells per latent
frame) and "path" (never trained: a new random velocity at every latent step, e.g. a pan that
turns into a tilt). Each clip has a camera reference (another wallpaper, same path), the target
(ground truth), its first frame (I2V) and a content video (the target's wallpaper on another
constant velocity, V2V; its frame 0 is the target's).

The camera is read from a video's frames by ``eval.shift_camera`` at the latent frames (every
``temporal_factor``-th frame) and compared with the ground truth's poses: RotErr in degrees per
frame (mean over frames 1..; relative to frame 0), over the clips the reading succeeds on, with
the failure count. PSNR (dB) is to the ground-truth target, on the same frames (pooled squared
error). The measure's validation is the "ground truth" row: it must read >= 90% of clips
within 1 deg/frame. Sampling models on these clips is ``inference.clone``'s.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from camclone_jax.data import wallpaper
from camclone_jax.eval import camera, shift_camera
from camclone_jax.eval.psnr import psnr_from_mse

PATH_SETS = ("constant", "path")


@dataclasses.dataclass
class Clip:
    """One held-out example (uint8 pixel videos [F, H, W, 3])."""

    camera_ref: np.ndarray
    target: np.ndarray
    content: np.ndarray
    steps_cells: np.ndarray  # [latent_frames - 1, 2] the camera path
    c2w: np.ndarray  # [latent_frames, 4, 4] ground-truth poses at the latent frames

    @property
    def first_frame(self) -> np.ndarray:
        return self.target[0]


def held_out_clips(world: wallpaper.WallpaperWorld, n: int, paths: str = "constant",
                   seed: int = 2024) -> list[Clip]:
    """n held-out clips on ``paths`` "constant" or "path" (see the module docstring)."""
    if paths not in PATH_SETS:
        raise ValueError(f"paths must be one of {PATH_SETS}, got {paths!r}")
    offset = PATH_SETS.index(paths)
    rng = np.random.default_rng(seed + offset)
    key = jax.random.key(seed + offset)
    table = world.velocities()
    out = []
    for i in range(n):
        walls = np.asarray(wallpaper.wallpapers(jax.random.fold_in(key, i), world, 2))
        if paths == "constant":
            steps = np.repeat(table[rng.integers(len(table))][None], world.latent_frames - 1, 0)
        else:
            steps = table[rng.integers(len(table), size=world.latent_frames - 1)]
        other = table[rng.integers(len(table))]
        shifts = wallpaper.path_shifts(world, steps)[::world.temporal_factor]  # [f, 2]
        out.append(Clip(camera_ref=wallpaper.render_clip(walls[0], world, steps),
                        target=wallpaper.render_clip(walls[1], world, steps),
                        content=wallpaper.render_clip(walls[1], world, other),
                        steps_cells=steps, c2w=wallpaper.shift_c2w(shifts, world.focal_px)))
    return out


def score_videos(videos, clips: list[Clip], world: wallpaper.WallpaperWorld) -> dict:
    """{"rot_err", "psnr", "read", "clips", "per_clip"} of videos [F, H, W, 3] against
    ``clips``: RotErr deg/frame (mean over the clips read), PSNR dB (of the squared error
    pooled over every clip), clips read, and each clip's RotErr (None: not read)."""
    per_clip, sq = [], []
    for video, clip in zip(videos, clips):
        frames = np.asarray(video)[::world.temporal_factor]  # [f, H, W, 3] latent frames
        truth = clip.target[::world.temporal_factor]
        sq.append(np.mean((frames[1:].astype(np.float64) - truth[1:]) ** 2))
        est = shift_camera.estimate(frames, world.focal_px)
        # frame 0 is the identity in both: average frames 1..
        per_clip.append(None if est is None else float(
            np.degrees(camera.camera_errors(est, clip.c2w)["rot"][1:]).mean()))
    errs = [e for e in per_clip if e is not None]
    return {"rot_err": float(np.mean(errs)) if errs else None,
            "psnr": psnr_from_mse(float(np.mean(sq))), "read": len(errs), "clips": len(clips),
            "per_clip": per_clip}


def reference_rows(clips: list[Clip], world: wallpaper.WallpaperWorld, task: str) -> list[dict]:
    """The rows every table starts with: the ground truth (the measure's validation) and a
    static camera (the first frame copied)."""
    static = [np.repeat(c.first_frame[None], len(c.target), 0) for c in clips]
    return [{"row": "ground truth", "task": task,
             **score_videos([c.target for c in clips], clips, world)},
            {"row": "copy first frame", "task": task, **score_videos(static, clips, world)}]


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| task | | RotErr (deg/frame) | clips read | PSNR (dB) |", "|---|---|---|---|---|"]
    for r in rows:
        rot = "-" if r["rot_err"] is None else f"{r['rot_err']:.2f}"
        lines.append(f"| {r['task'].upper()} | {r['row']} | {rot} | {r['read']}/{r['clips']} | "
                     f"{r['psnr']:.1f} |")
    return "\n".join(lines)
