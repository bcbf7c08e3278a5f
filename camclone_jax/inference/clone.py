"""Camera cloning of wallpaper-world models, sampled and scored on held-out clips.

Every sample comes from ``CamClonePipeline.generate``, the sampler the CLI runs, on the
held-out clips of ``eval.clone`` (scored there). ``evaluate`` makes the table rows (ground truth,
a static camera, each model with and without its camera reference, no-camera models);
``clone_check`` is a training run's closing check (``config.clone_check``); ``demo_video``
the watchable side-by-side video of one clip.

A wallpaper model's export holds ``world.json`` (the world it was trained on); the shipped ones
are ``SHIPPED`` (trained by ``configs/clone_tiny.py``) and ``NO_CAMERA`` (``:nocam``).
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw  # pillow: a dependency of imageio

from camclone_jax.data import wallpaper
from camclone_jax.eval import clone as clone_eval
from camclone_jax.inference.options import SampleOptions, write_video
from camclone_jax.inference.pipeline import CamClonePipeline
from camclone_jax.utils import read_json, write_atomic

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "models")
SHIPPED = os.path.join(ASSETS, "clone_tiny")  # the shipped tiny CamClone model
NO_CAMERA = os.path.join(ASSETS, "clone_tiny_nocam")  # its no-camera baseline
WORLD_FILE = "world.json"


def save_world(model_dir: str, world: wallpaper.WallpaperWorld):
    """Writes the world a model was trained on beside its weights."""
    write_atomic(os.path.join(model_dir, WORLD_FILE), json.dumps(world.to_dict(), indent=1))


def load_world(model_dir: str) -> wallpaper.WallpaperWorld:
    """The wallpaper world of a model export (its world.json)."""
    path = os.path.join(model_dir, WORLD_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: {model_dir} is not a wallpaper-world "
                                "model (train one with configs/clone_tiny.py)")
    world = read_json(path)
    return wallpaper.WallpaperWorld(**{**world, "cells": tuple(world["cells"])})


def generate_all(pipe, clips: list, task: str, *, steps: int = 20,
                 no_camera: bool = False) -> list[np.ndarray]:
    """Samples every clip with the pipeline at the clip's own size (I2V: the first frame; V2V:
    the content video, with the target's first frame as the given image, the release's
    ``first_frame_path``); uint8 videos [F, H, W, 3]. ``clips``: ``eval.clone`` or
    ``eval.clone_3d`` clips."""
    out = []
    for i, clip in enumerate(clips):
        frames, h, w = clip.target.shape[:3]
        opts = SampleOptions(frames=frames, height=h, width=w, steps=steps, no_camera=no_camera,
                             seed=i)
        inputs = {"image": clip.first_frame}
        if task == "v2v":
            inputs["content_ref"] = clip.content
        res = pipe.generate(clip.camera_ref, options=opts, progress=False, **inputs)
        out.append(res.video)
    return out


def evaluate(models: dict, clips: list[clone_eval.Clip], world: wallpaper.WallpaperWorld, *,
             no_camera_models: dict | None = None, tasks=("i2v", "v2v"), steps: int = 20,
             log=print) -> list[dict]:
    """Table rows {"row", "task", **score_videos}: ground truth, copy first frame, then per
    model name -> pipeline: with its camera reference and with it zeroed; then per no-camera
    model (trained with a zero camera reference, so sampled with one) a row."""
    rows = []
    for task in tasks:
        rows += clone_eval.reference_rows(clips, world, task)
        for name, pipe in models.items():
            for zeroed in (False, True):
                videos = generate_all(pipe, clips, task, steps=steps, no_camera=zeroed)
                label = f"{name}, camera reference zeroed" if zeroed else name
                rows.append({"row": label, "task": task,
                             **clone_eval.score_videos(videos, clips, world)})
                log(rows[-1])
        for name, pipe in (no_camera_models or {}).items():
            videos = generate_all(pipe, clips, task, steps=steps, no_camera=True)
            rows.append({"row": name, "task": task,
                         **clone_eval.score_videos(videos, clips, world)})
            log(rows[-1])
    return rows


def clone_check(model: str, no_camera_model: str = "", clips: int = 16, steps: int = 20,
                log=print) -> dict:
    """A run's closing check: ``model`` (a wallpaper export, the one just trained) on ``clips``
    held-out I2V clips on never-trained camera paths, next to itself with the camera reference
    zeroed, the no-camera model (default the shipped one) and a static camera; returns
    {row: RotErr} and logs a few lines."""
    no_camera_model = no_camera_model or NO_CAMERA
    world = load_world(model)
    held = clone_eval.held_out_clips(world, clips, "path")
    rows = evaluate({"CamClone": CamClonePipeline.from_checkpoint(model)}, held, world,
                    no_camera_models={"no-camera model": CamClonePipeline
                                      .from_checkpoint(no_camera_model)},
                    tasks=("i2v",), steps=steps, log=lambda _: None)
    log(f"camera cloning by the model just trained ({model}), {clips} held-out I2V clips on "
        "camera paths never trained, RotErr deg/frame (lower is better):")
    for r in rows[1:]:
        rot = "failed" if r["rot_err"] is None else f"{r['rot_err']:.2f}"
        log(f"  {r['row']:<34} {rot:>7}   read {r['read']}/{r['clips']}   PSNR {r['psnr']:.1f} dB")
    return {r["row"]: r["rot_err"] for r in rows}


def label_strip(panels: list[np.ndarray], labels: list[str], scale: int) -> np.ndarray:
    """Videos [F, H, W, 3] side by side, each upscaled ``scale`` x (nearest neighbour) under a
    black band with its label: uint8 [F, 12 + H s, n W s, 3]."""
    out = []
    for video, label in zip(panels, labels):
        big = np.asarray(video).repeat(scale, 1).repeat(scale, 2)  # [F, H s, W s, 3]
        band = Image.new("RGB", (big.shape[2], 12))
        ImageDraw.Draw(band).text((2, 0), label, fill=(255, 255, 255))
        band = np.broadcast_to(np.asarray(band), (len(big),) + np.asarray(band).shape)
        out.append(np.concatenate([band, big], axis=1))  # [F, 12 + H s, W s, 3]
    return np.concatenate(out, axis=2)


def demo_video(path: str, pipe, clip: clone_eval.Clip, task: str,
               world: wallpaper.WallpaperWorld, *, steps: int = 20, scale: int = 8,
               fps: float = 8.0) -> dict:
    """Writes ``path``: camera reference | first frame (I2V) or content (V2V) | result | ground
    truth, labelled and upscaled; returns {"path", "psnr", "rot_err"} of the result."""
    video = generate_all(pipe, [clip], task, steps=steps)[0]  # [F, H, W, 3]
    middle = np.repeat(clip.first_frame[None], len(video), 0) if task == "i2v" else clip.content
    labels = ["camera ref", "first frame" if task == "i2v" else "content", "result", "truth"]
    write_video(path, label_strip([clip.camera_ref, middle, video, clip.target], labels, scale),
                fps)
    score = clone_eval.score_videos([video], [clip], world)
    return {"path": path, "psnr": score["psnr"], "rot_err": score["rot_err"]}
