"""Held-out camera-cloning scores of wallpaper-world models (``data.wallpaper``).

Held-out clips: new random wallpapers (seeded apart from training's keys), on two
trajectory sets: "constant" (the training kind: one velocity in {-1..1}^2 cells per latent
frame) and "path" (never trained: a new random velocity at every latent step, e.g. a pan that
turns into a tilt). Each clip has a camera reference (another wallpaper, same path), the target
(ground truth), its first frame (I2V) and a content video (the target's wallpaper on another
constant velocity, V2V; its frame 0 is the target's).

Every sample comes from ``CamClonePipeline.generate``, the sampler the CLI runs. The camera is
read from the generated frames by ``eval.shift_camera`` at the latent frames (every
``temporal_factor``-th frame) and compared with the ground truth's poses: RotErr in degrees per
frame (mean over frames 1..; relative to frame 0), over the clips the reading succeeds on, with
the failure count. PSNR (dB) is to the ground-truth target, on the same frames (pooled squared error). Rows:
``ground truth`` (the measure's validation: it must read >= 90% of clips within 1 deg/frame),
``copy first frame`` (a static camera), and each model given, with its camera reference and
with the camera reference zeroed.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from camclone_jax import inference
from camclone_jax.data import wallpaper
from camclone_jax.eval import camera, shift_camera
from camclone_jax.eval.psnr import psnr_from_mse
from camclone_jax.training.wallpaper import Recipe

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "models")
SHIPPED = os.path.join(ASSETS, "clone_tiny")  # the shipped tiny CamClone model
NO_CAMERA = os.path.join(ASSETS, "clone_tiny_nocam")  # its no-camera baseline


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
    if paths not in ("constant", "path"):
        raise ValueError(f"paths must be 'constant' or 'path', got {paths!r}")
    offset = 0 if paths == "constant" else 1
    rng = np.random.default_rng(seed + offset)
    key = jax.random.key(seed + offset)  # apart from training's keys (its seed, folded by step)
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
    """{"rot_err", "psnr", "read", "clips", "per_clip"} of generated videos [F, H, W, 3]
    against ``clips``: RotErr deg/frame (mean over the clips read), PSNR dB (of the squared error
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


def generate_all(pipe, clips: list[Clip], task: str, world: wallpaper.WallpaperWorld, *,
                 steps: int = 20, no_camera: bool = False) -> list[np.ndarray]:
    """Samples every clip with the pipeline (I2V: the first frame; V2V: the content video)."""
    h, w = world.size
    opts = inference.SampleOptions(frames=world.frames, height=h, width=w, steps=steps,
                                   no_camera=no_camera)
    out = []
    for i, clip in enumerate(clips):
        inputs = {"image": clip.first_frame} if task == "i2v" else {"content_ref": clip.content}
        res = pipe.generate(clip.camera_ref, options=opts.replace(seed=i), progress=False,
                            **inputs)
        out.append(res.video)
    return out


def evaluate(models: dict, clips: list[Clip], world: wallpaper.WallpaperWorld, *,
             no_camera_models: dict | None = None, tasks=("i2v", "v2v"), steps: int = 20,
             log=print) -> list[dict]:
    """Table rows {"row", "task", **score_videos}: ground truth, copy first frame, then per
    model name -> pipeline: with its camera reference and with it zeroed; then per no-camera
    model (trained with a zero camera reference, so sampled with one) a row."""
    rows = []
    for task in tasks:
        rows.append({"row": "ground truth", "task": task,
                     **score_videos([c.target for c in clips], clips, world)})
        static = [np.repeat(c.first_frame[None], len(c.target), 0) for c in clips]
        rows.append({"row": "copy first frame", "task": task,
                     **score_videos(static, clips, world)})
        for name, pipe in models.items():
            for zeroed in (False, True):
                videos = generate_all(pipe, clips, task, world, steps=steps, no_camera=zeroed)
                label = f"{name}, camera reference zeroed" if zeroed else name
                rows.append({"row": label, "task": task, **score_videos(videos, clips, world)})
                log(rows[-1])
        for name, pipe in (no_camera_models or {}).items():
            videos = generate_all(pipe, clips, task, world, steps=steps, no_camera=True)
            rows.append({"row": name, "task": task, **score_videos(videos, clips, world)})
            log(rows[-1])
    return rows


def clone_check(model: str = "", no_camera_model: str = "", clips: int = 16, steps: int = 20,
                log=print) -> dict:
    """The demo's closing check: the shipped tiny CamClone model (default SHIPPED) and the
    shipped no-camera model (NO_CAMERA) on ``clips`` held-out I2V clips on never-trained paths;
    returns {row: RotErr} and logs a few lines."""
    model, no_camera_model = model or SHIPPED, no_camera_model or NO_CAMERA
    world = Recipe.load(model).world
    held = held_out_clips(world, clips, "path")
    rows = evaluate({"CamClone": inference.CamClonePipeline.from_checkpoint(model)}, held, world,
                    no_camera_models={"no-camera model": inference.CamClonePipeline
                                      .from_checkpoint(no_camera_model)},
                    tasks=("i2v",), steps=steps, log=lambda _: None)
    log(f"camera cloning, shipped tiny model ({model}), {clips} held-out I2V clips on new "
        "camera paths, RotErr deg/frame (lower is better):")
    for r in rows[1:]:
        rot = "failed" if r["rot_err"] is None else f"{r['rot_err']:.2f}"
        log(f"  {r['row']:<34} {rot:>7}   read {r['read']}/{r['clips']}   PSNR {r['psnr']:.1f} dB")
    return {r["row"]: r["rot_err"] for r in rows}


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| task | | RotErr (deg/frame) | clips read | PSNR (dB) |", "|---|---|---|---|---|"]
    for r in rows:
        rot = "-" if r["rot_err"] is None else f"{r['rot_err']:.2f}"
        lines.append(f"| {r['task'].upper()} | {r['row']} | {rot} | {r['read']}/{r['clips']} | "
                     f"{r['psnr']:.1f} |")
    return "\n".join(lines)
