"""What a finished training run writes: the export, the sample videos and the clone check.

``export`` writes WORKDIR/export (the full trained params, codec.json, text.json and, for
wallpaper runs, world.json); ``closing`` then samples it (WORKDIR/sample_{i2v,v2v}.mp4: camera
ref | first frame or content | result | ground truth) and, for wallpaper runs, scores it on
held-out clips (``config.clone_check``).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax import inference
from camclone_jax.data import pipeline, records, transforms
from camclone_jax.data.transforms import ClipConfig
from camclone_jax.eval import clone as clone_eval
from camclone_jax.eval.psnr import psnr
from camclone_jax.inference import clone as clone_lib
from camclone_jax.inference.pipeline import OBJECTIVE_FILE
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import step as step_lib
from camclone_jax.training.data import wallpaper_world


def closing(workdir, config, pixels) -> dict:
    """The sample videos ("sample") and the clone check ("clone_check", "clone_check_lines")
    of a finished run whose export is in WORKDIR/export; ``pixels``: mp4 records to sample
    from (records runs)."""
    out = {}
    # a base model (conditioning "base") has no reference inputs to sample a camera clone with
    if config.objective.conditioning == "base":
        return out
    wallpaper = config.data.kind == "wallpaper"
    if config.sample.enabled and wallpaper:
        out["sample"] = wallpaper_videos(workdir, config)
    elif config.sample.enabled and pixels:
        out["sample"] = sample_video(workdir, config, pixels)
    # single-process runs only: the check loads the export outside the run's mesh
    if wallpaper and config.clone_check.enabled and jax.process_count() == 1:
        check, lines = config.clone_check, []
        out["clone_check"] = clone_lib.clone_check(
            os.path.join(workdir, "export"), check.no_camera_model, check.clips, check.steps,
            log=lines.append)
        out["clone_check_lines"] = lines
    return out


def export(workdir, config, dit_cfg, state, frozen, codec, step):
    """WORKDIR/export: the full trained param set (EMA if kept) + codec.json + text.json +
    objective.json (the frames the loss covered)."""
    trained = state["ema"] if state["ema"] is not None else state["params"]
    full = step_lib.merge_params(trained, jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32), frozen))
    extra = {"text.json": {"kind": config.data.text, "text_len": config.data.text_len,
                           "text_dim": dit_cfg.text_dim},
             # the sampler pins frame 0 to the given first frame when training never scored it
             OBJECTIVE_FILE: {"loss_from_frame": int(config.objective.loss_from_frame)}}
    if codec is not None:
        extra["codec.json"] = codec.to_dict()
    if config.data.kind == "wallpaper":  # the world it was trained on, for its clone scores
        extra[clone_lib.WORLD_FILE] = wallpaper_world(config.data).to_dict()
    out = os.path.join(workdir, "export")
    ckpt_lib.export_model(out, dit_cfg, full, extra_files=extra, overwrite=True,
                          source=f"camclone_jax.train step {step}")


def sample_video(workdir, config, records_path) -> dict | None:
    """Samples the exported model on the first held-out triplet, I2V and V2V, and writes
    WORKDIR/sample_{i2v,v2v}.mp4: camera ref | first frame or content ref | result | ground
    truth. Returns {task: {"path", "psnr"}} (PSNR of the result against the true target) or
    None for latent records (no pixels to condition on). Process 0 only."""
    if jax.process_index() != 0:
        return None
    rec = records.decode_triplet(next(records.read_records(pipeline.record_files(records_path)[0])))
    if rec["kind"] != "mp4":
        return None
    clip = ClipConfig(num_frames=config.data.frames, height=config.data.height,
                      width=config.data.width, frame_stride=config.data.frame_stride,
                      short_video="repeat_last")
    cam, content, target = (transforms.load_clip(rec[k]["video"], clip)
                            for k in ("camera_ref", "content_ref", "target"))  # [F, H, W, 3]
    pipe = inference.CamClonePipeline.from_checkpoint(os.path.join(workdir, "export"))
    opts = dict(frames=clip.num_frames, height=clip.height, width=clip.width,
                steps=config.sample.steps, shift=config.sample.shift, cfg=config.sample.cfg,
                seed=config.sample.seed, fps=float(rec["fps"]), progress=False,
                no_camera=config.objective.conditioning == "no_camera",
                v2v_first_frame=config.objective.v2v_first_frame)
    out = {}
    for task, cond in (("i2v", {"image": target[0]}), ("v2v", {"content_ref": content})):
        result = pipe.generate(cam, rec["caption"], **cond, **opts)
        path = os.path.join(workdir, f"sample_{task}.mp4")
        inference.write_video(path, np.concatenate([result.side_by_side(), target], axis=2),
                              float(rec["fps"]))
        out[task] = {"path": path, "psnr": psnr(result.video, target)}
    return out


def wallpaper_videos(workdir, config) -> dict | None:
    """WORKDIR/sample_{i2v,v2v}.mp4 of a wallpaper run: the export clones the first held-out
    clip on a never-trained camera path (camera ref | first frame or content | result | ground
    truth, labelled, 8x nearest-neighbour). Returns {task: {"path", "psnr", "rot_err"}}.
    Process 0 only."""
    if jax.process_index() != 0:
        return None
    export = os.path.join(workdir, "export")
    world = wallpaper_world(config.data)
    clip = clone_eval.held_out_clips(world, 1, "path")[0]
    pipe = inference.CamClonePipeline.from_checkpoint(export)
    return {task: clone_lib.demo_video(os.path.join(workdir, f"sample_{task}.mp4"), pipe, clip,
                                       task, world, steps=config.sample.steps)
            for task in ("i2v", "v2v")}
