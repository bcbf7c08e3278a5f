"""The training job's data side: the dataset on disk, the Grain pipeline config, host batches.

``ensure_dataset`` finds the configured records or renders the synthetic dataset on first use
(and pre-encodes it with the pixel codec for latent-kind configs); ``wallpaper_sources`` are the
procedural clone world's splits (``data.kind="wallpaper"``: no files), ``data_codec`` and
``clip_geometry`` the codec and pixel clip size of either; ``wallpaper_mix_source`` the
clone world mixed into a records run;
``pipeline_config`` turns the run config's ``data`` block into the pipeline's; the image
encoder adds CLIP tokens for models with image cross-attention; ``device_batch_of`` makes a
host batch a global, sharded one.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from camclone_jax import tasks
from camclone_jax.convert.encoders import load_clip
from camclone_jax.data import pipeline
from camclone_jax.data.codec import codec_from_dict
from camclone_jax.data.encode import encode_records
from camclone_jax.data.synthetic.writer import GeneratorConfig, generate_dataset
from camclone_jax.data.wallpaper import WallpaperWorld
from camclone_jax.data.augment import Augment
from camclone_jax.data.curriculum import Curriculum
from camclone_jax.data.wallpaper_source import WallpaperSource
from camclone_jax.data.transforms import ClipConfig
from camclone_jax.models import clip
from camclone_jax.training import checkpoint as ckpt_lib

DROP_KEYS = ("caption", "index")  # host-side fields the step does not use
SPLIT_KEYS = ("num_groups", "seed", "val_groups", "val_seed")  # data.synthetic: the splits
WORLD_KEYS = ("moves", "max_angle", "max_roll", "constant_speed", "scenes",  # and the world
              "lens_mm", "triplets_per_target")


def ensure_dataset(data_cfg, workdir: str) -> dict:
    """{"train": records, "val": records or None, "pixels": mp4 records for sample videos or
    None}: the configured paths, or the synthetic dataset generated on first use under
    data.synthetic_dir (default WORKDIR/data; the demo's embedded default), pre-encoded with
    the pixel codec when the config reads latent records. A shared synthetic_dir lets several
    runs (the small-scale reproduction's stages) render and encode the data once."""
    path, val = data_cfg.get("path", ""), data_cfg.get("val_path", "") or None
    synth = data_cfg.get("synthetic")
    pixels = None
    if not path and synth:
        synth = dict(synth)
        unknown = sorted(set(synth) - set(SPLIT_KEYS + WORLD_KEYS))
        if unknown:
            raise ValueError(f"config.data.synthetic has unknown keys {unknown}; it takes "
                             f"{SPLIT_KEYS + WORLD_KEYS}")
        root = data_cfg.get("synthetic_dir", "") or os.path.join(workdir, "data")
        splits = {}
        for split, groups, seed in (("train", synth["num_groups"], synth.get("seed", 0)),
                                    ("val", synth.get("val_groups", 0), synth.get("val_seed", 1))):
            if groups:
                splits[split] = _synthetic_split(data_cfg, os.path.join(root, split), groups, seed)
        ckpt_lib._sync("dataset")
        path, val = splits["train"], splits.get("val")
        pixels = os.path.join(root, "val" if "val" in splits else "train", "records")
    if not path:
        raise FileNotFoundError(
            "config.data.path is empty: point it at triplet ArrayRecord files (make them with "
            "`python -m camclone_jax.data.prepare` from a CamCloneDataset.csv, or `python -m "
            "camclone_jax.data.synthetic --out DIR`), or set config.data.synthetic")
    for p in (path, val):
        if p and not (os.path.exists(p) or any(c in p for c in "*?[")):
            raise FileNotFoundError(
                f"dataset {p!r} does not exist; make one with `python -m camclone_jax.data."
                "synthetic --out DIR` (synthetic) or `python -m camclone_jax.data.prepare` "
                "(CamCloneDataset.csv), then `python -m camclone_jax.data.encode` for latents")
    if pixels is None and data_cfg.kind == "mp4":
        pixels = val or path
    return {"train": path, "val": val, "pixels": pixels}


def wallpaper_world(data_cfg) -> WallpaperWorld:
    """The clone world of a ``data.kind="wallpaper"`` config."""
    world = dict(data_cfg.wallpaper.world)
    return WallpaperWorld(**{**world, "cells": tuple(world["cells"])})


def wallpaper_sources(config) -> dict:
    """{"train", "val", "pixels"} of a wallpaper run: the procedural training split (seed
    ``config.seed``, constant camera velocities, the same-scene curriculum counted in global
    batches) and the held-out one (``val_seed``, ``val_paths``, no aid, ``eval_batches``
    global batches); no pixel records."""
    if config.data.get("path") or config.data.get("val_path"):
        raise ValueError(
            f"config.data.path={config.data.path!r} / val_path={config.data.val_path!r} are set "
            "but data.kind is 'wallpaper' (the procedural clone world reads no files): set "
            "--config.data.kind=latent or mp4 to train on records, or leave them empty")
    wp, world = config.data.wallpaper, wallpaper_world(config.data)
    if world.scene_scale != 1 and (config.sample.enabled or config.clone_check.enabled):
        raise ValueError(
            f"data.wallpaper.world.scene_scale={world.scene_scale}: the end-of-run sample and "
            "clone check render views that wrap around (scene_scale 1); set "
            "--config.sample.enabled=False --config.clone_check.enabled=False")
    train = _wallpaper_train_source(config, world)
    val = None
    if config.eval_every:
        val = WallpaperSource(world, seed=wp.val_seed, paths=wp.val_paths,
                              length=config.eval_batches * config.batch_size,
                              v2v_ratio=config.data.v2v_ratio)
    return {"train": train, "val": val, "pixels": None}


def wallpaper_mix_source(config):
    """The wallpaper source mixed into a records run (``data.wallpaper_mix`` > 0; None
    otherwise): the training split of ``data.wallpaper`` (its world, same-scene curriculum,
    seed ``config.seed``), checked to make latents of the records' shape and codec."""
    data = config.data
    if not data.get("wallpaper_mix", 0.0):
        return None
    if not 0.0 < data.wallpaper_mix <= 1.0 or data.wallpaper_mix_steps < 0:
        raise ValueError(f"data.wallpaper_mix={data.wallpaper_mix} must be in [0, 1] and "
                         f"data.wallpaper_mix_steps={data.wallpaper_mix_steps} >= 0")
    world = wallpaper_world(data)
    codec = dict(data.get("codec") or {})
    if data.kind != "latent" or codec.get("kind") != "pixel" or data.text == "cached":
        raise ValueError(
            f"data.wallpaper_mix={data.wallpaper_mix} mixes the wallpaper world's pixel-codec "
            "latents into latent records of the pixel codec without cached text; this run has "
            f"data.kind={data.kind!r}, codec {codec or None}, text={data.text!r}")
    mine = ((world.frames, *world.size), world.codec.to_dict())
    theirs = ((data.frames, data.height, data.width), codec_from_dict(codec).to_dict())
    if mine != theirs:
        raise ValueError(
            f"data.wallpaper_mix: the wallpaper world makes clips (frames, height, width) "
            f"{mine[0]} with codec {mine[1]}, the records {theirs[0]} with {theirs[1]}; set "
            "data.wallpaper.world (cells, cell_px, latent_frames, temporal_factor) to match")
    return _wallpaper_train_source(config, world)


def _wallpaper_train_source(config, world: WallpaperWorld) -> WallpaperSource:
    """The wallpaper world's endless training split: seed ``config.seed``, constant camera
    velocities, ``data.wallpaper``'s same-scene curriculum counted in global batches."""
    wp = config.data.wallpaper
    return WallpaperSource(world, seed=config.seed, length=2 ** 40,
                           v2v_ratio=config.data.v2v_ratio,
                           curriculum=Curriculum(wp.same_scene, wp.same_scene_steps,
                                                 config.batch_size))


def data_codec(data_cfg):
    """The pixel codec of the config (the world's for wallpaper runs), or None (Wan VAE
    latents)."""
    if data_cfg.kind == "wallpaper":
        return wallpaper_world(data_cfg).codec
    return codec_from_dict(dict(data_cfg.codec)) if data_cfg.get("codec") else None


def clip_geometry(data_cfg) -> tuple[int, int, int]:
    """(frames, height, width) of a training clip in pixels."""
    if data_cfg.kind == "wallpaper":
        world = wallpaper_world(data_cfg)
        return (world.frames, *world.size)
    return data_cfg.frames, data_cfg.height, data_cfg.width


def _synthetic_split(data_cfg, out: str, groups: int, seed: int) -> str:
    """Renders one synthetic split (process 0; skipped when complete) and, for latent-kind
    configs, pre-encodes it with the configured codec; returns the records folder to read."""
    if jax.process_index() == 0:
        world = {k: v for k, v in dict(data_cfg.synthetic).items() if k in WORLD_KEYS}
        generate_dataset(out, GeneratorConfig(
            num_groups=groups, frames=data_cfg.frames, height=data_cfg.height,
            width=data_cfg.width, seed=seed, preview_triplets=0, **world), progress=False)
    if data_cfg.kind == "mp4":
        return os.path.join(out, "records")
    codec = dict(data_cfg.get("codec") or {})
    if codec.get("kind") != "pixel":
        raise ValueError("synthetic latent records are made with the pixel codec only; set "
                         "data.codec={'kind': 'pixel'} or data.kind='mp4'")
    codec = codec_from_dict(codec)
    # one folder per codec setting, so splits shared by runs with other codecs never mix
    tag = "-".join(f"{k}{v:g}" for k, v in sorted(codec.to_dict().items()) if k != "kind")
    latents = os.path.join(out, f"latents-pixel-{tag}")
    if jax.process_index() == 0:
        encode_records(os.path.join(out, "records"), "pixel", latents,
                       ClipConfig(num_frames=data_cfg.frames, height=data_cfg.height,
                                  width=data_cfg.width), batch_size=8, i2v=True,
                       process_index=0, process_count=1, codec=codec)
    return latents


def augmentation(data_cfg) -> Augment:
    """The run's camera-preserving augmentation (``data.augment``: geometry, ref_colour); for
    latent records the pixel codec's cell size comes with it."""
    spec = dict(data_cfg.get("augment") or {})
    unknown = set(spec) - {"geometry", "ref_colour"}
    if unknown:
        raise ValueError(f"data.augment takes geometry and ref_colour, got {sorted(unknown)}")
    codec = dict(data_cfg.get("codec") or {})
    cell = codec_from_dict(codec).spatial_factor if data_cfg.kind == "latent" and \
        codec.get("kind") == "pixel" else 0
    return Augment(geometry=bool(spec.get("geometry", False)),
                   ref_colour=bool(spec.get("ref_colour", False)), cell=cell)


def pipeline_config(data_cfg, per_host_batch: int, seed: int, *, held_out: bool = False,
                    **overrides):
    """The Grain pipeline's config from the run config's ``data`` block: the training split's,
    or (``held_out``) a held-out split's: in order, once, in this process, every batch full,
    without the curriculum or augmentation."""
    frames, height, width = clip_geometry(data_cfg)
    kind = "latent" if data_cfg.kind == "wallpaper" else data_cfg.kind  # procedural latents
    clip = ClipConfig(kind=kind, num_frames=frames, height=height,
                      width=width, frame_stride=data_cfg.frame_stride,
                      short_video=data_cfg.short_video, v2v_ratio=data_cfg.v2v_ratio,
                      pixel_dtype="uint8" if data_cfg.kind == "mp4" else "float32",
                      text_len=data_cfg.text_len if data_cfg.text == "cached" else 0)
    kwargs = dict(clip=clip, batch_size=per_host_batch, seed=seed,
                  num_workers=data_cfg.num_workers, max_bad_records=data_cfg.max_bad_records,
                  same_scene=Curriculum(data_cfg.get("same_scene", 0.0),
                                        data_cfg.get("same_scene_steps", 0),
                                        per_host_batch * jax.process_count()),
                  augment=augmentation(data_cfg),
                  mix=Curriculum(data_cfg.get("wallpaper_mix", 0.0),
                                 data_cfg.get("wallpaper_mix_steps", 0),
                                 per_host_batch * jax.process_count()))
    if held_out:
        kwargs.update(shuffle=False, num_epochs=1, num_workers=0, drop_remainder=True,
                      same_scene=Curriculum(), augment=Augment(), mix=Curriculum())
    kwargs.update(overrides)
    return pipeline.PipelineConfig(**kwargs)


class ImageEncoder:
    """CLIP tokens of each example's conditioning image, added to the host batch as
    image_embeds [b, 257, d] (for models with image cross-attention). The image is
    ``tasks.conditioning_image``'s: the target's first frame in both tasks (the release), or a
    black frame for V2V examples under ``v2v_first_frame="none"`` (give ``tasks.first_frame_rule``'s
    rule)."""

    def __init__(self, path: str, v2v_first_frame: str = "content"):
        if not path or not os.path.exists(path):
            raise FileNotFoundError(
                f"this model has image cross-attention and needs CLIP weights, but "
                f"config.clip_checkpoint={path!r} does not exist; import them with `python -m "
                "camclone_jax.convert import --kind clip --src WEIGHTS --out DIR`")
        tasks.validate(v2v_first_frame=v2v_first_frame)
        self.v2v_first_frame = v2v_first_frame
        self.cfg, params = load_clip(path)
        self.params = clip.prepare_params(self.cfg, params)

    def __call__(self, batch: dict) -> dict:
        image = tasks.conditioning_image(batch["first_frame"], batch["task"],
                                         self.v2v_first_frame)  # [b, H, W, 3]
        pixels = clip.preprocess_images(image, size=self.cfg.image_size)  # [b, S, S, 3]
        embeds = clip.encode_images(self.cfg, self.params, pixels)  # [b, 257, d]
        return {**batch, "image_embeds": np.asarray(embeds, np.float32)}


def device_batch_of(batch: dict, mesh, data_axes, image_encoder=None) -> dict:
    """A host batch as global arrays on ``mesh`` (CLIP tokens added first if an encoder is
    given; captions and record indices stay on the host)."""
    batch = image_encoder(batch) if image_encoder else batch
    return pipeline.global_batch({k: v for k, v in batch.items() if k not in DROP_KEYS},
                                 mesh, data_axes)
