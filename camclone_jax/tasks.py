"""The one conditioning contract: what the DiT sees for each task, in training and in sampling.

Training (``training.step``), validation, sampling (``inference.pipeline``), the notebooks and the
reproduction scripts all build the DiT's keyword inputs here and nowhere else:

  image = conditioning_image(first, task, v2v_first_frame)      # what CLIP / the VAE see
  video = first_frame_video(image, frames)                      # [image, zeros...]
  kwargs = dit_inputs(dit_cfg, task=task, cam_latents=cam, content_latents=content,
                      image_latents=codec.encode(video), image_embeds=clip(image),
                      conditioning="camclone", v2v_first_frame="content")
  v = DiT(dit_cfg).apply(params, x_t, timesteps, text, **kwargs)

The rules (the public release's, REFERENCE.md "First frame in both tasks"):
  * I2V (task 0): the content reference latent is all zeros (the release's
    ``--cameraclone_type i2v`` zeroes it even when a content video is given).
  * V2V (task 1): the content reference latent is the content video's.
  * First frame, both tasks (``v2v_first_frame="content"``, the default): an I2V base
    (``cond_channels > 0``) gets the first-frame condition (4-channel mask + latent of
    [image, zeros...]) and, with image cross-attention, the CLIP tokens of that image. In
    training the image is the target's own first frame; in V2V sampling it is the content
    reference's first frame, or a given image (the release's ``first_frame_path``).
    ``v2v_first_frame="none"`` (this project's earlier convention) gives V2V a zero first-frame
    condition and the CLIP tokens of a black frame.
  * ``conditioning``: "camclone" (the paper), "base" (no references: plain Wan, the stage-1
    base model; its V2V-drawn half trains as T2V, with no first frame, whatever
    ``v2v_first_frame`` says), "no_camera" (the no-control ablation: the camera latent is
    zeroed).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from camclone_jax.data.transforms import I2V, V2V
from camclone_jax.models.params import first_frame_condition

CONDITIONING = ("camclone", "base", "no_camera")
V2V_FIRST_FRAME = ("content", "none")
TASKS = {"i2v": I2V, "v2v": V2V}


def validate(conditioning: str = "camclone", v2v_first_frame: str = "content"):
    """Raises ValueError naming a conditioning mode or V2V first-frame rule that is not known."""
    if conditioning not in CONDITIONING:
        raise ValueError(f"conditioning must be one of {CONDITIONING}, got {conditioning!r}")
    if v2v_first_frame not in V2V_FIRST_FRAME:
        raise ValueError(f"v2v_first_frame must be one of {V2V_FIRST_FRAME}, "
                         f"got {v2v_first_frame!r}")


def first_frame_rule(conditioning: str, v2v_first_frame: str) -> str:
    """The V2V first-frame rule in force: a base model's V2V-drawn examples are its T2V half."""
    validate(conditioning, v2v_first_frame)
    return "none" if conditioning == "base" else v2v_first_frame


def task_ids(task, batch: int) -> np.ndarray | jnp.ndarray:
    """A task name ("i2v" / "v2v"), id or [b] id array -> ids [b]."""
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
        task = TASKS[task]
    if isinstance(task, (int, np.integer)):
        return np.full((batch,), task, np.int32)
    return task


def has_first_frame(task, v2v_first_frame: str = "content"):
    """[b] bool (or a bool for a scalar task): whether an example is conditioned on a first
    frame. I2V always; V2V under the release's rule ("content")."""
    validate(v2v_first_frame=v2v_first_frame)
    if v2v_first_frame == "content":
        return task == task  # all true, in task's own array type
    return task == I2V


def _per_example(mask, x):
    """Broadcasts a [b] mask over x [b, ...]."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def conditioning_image(image, task, v2v_first_frame: str = "content") -> np.ndarray:
    """The image the first-frame condition and CLIP see, per example (host arrays).

    image [b, H, W, 3] (uint8, or float in [-1, 1]); task [b]. Examples without a first frame
    (V2V under ``v2v_first_frame="none"``) get a black frame (0 for uint8, -1 for float).
    """
    image = np.asarray(image)
    keep = np.asarray(has_first_frame(np.asarray(task_ids(task, image.shape[0])),
                                      v2v_first_frame))  # [b]
    black = np.zeros_like(image) if image.dtype == np.uint8 else np.full_like(image, -1.0)
    return np.where(keep[:, None, None, None], image, black)  # [b, H, W, 3]


def first_frame_video(image, frames: int):
    """image [b, H, W, 3] float in [-1, 1] -> [b, frames, H, W, 3]: the image at frame 0 and
    zeros (mid grey) after, the clip Wan I2V encodes for its first-frame latent."""
    image = jnp.asarray(image, jnp.float32)
    video = jnp.zeros((image.shape[0], frames) + image.shape[1:], jnp.float32)
    return video.at[:, 0].set(image)  # [b, F, H, W, 3]


def dit_inputs(dit_cfg, *, task, cam_latents=None, content_latents=None, image_latents=None,
               image_embeds=None, conditioning: str = "camclone",
               v2v_first_frame: str = "content") -> dict:
    """The DiT's keyword inputs for a batch: cam_latents, content_latents, first_frame,
    image_embeds (only those the model and the conditioning mode take).

    task [b] (0 I2V, 1 V2V; or "i2v"/"v2v" for all); cam_latents / content_latents
    [b, f, h, w, C] (content may be None for I2V); image_latents [b, f, h, w, C]: the codec
    latents of ``first_frame_video`` (needed when the model has first-frame channels);
    image_embeds [b, n, d]: CLIP tokens of ``conditioning_image`` (models with image
    cross-attention).
    """
    validate(conditioning, v2v_first_frame)
    ref = next((a for a in (cam_latents, content_latents, image_latents, image_embeds)
                if a is not None), None)
    if ref is None and not hasattr(task, "shape"):
        raise ValueError("a task name or id needs at least one input to take the batch from")
    task = jnp.asarray(task_ids(task, ref.shape[0] if ref is not None else 0))  # [b]
    out = {}
    if conditioning != "base":
        if cam_latents is None:
            raise ValueError("the camera reference latents are missing")
        cam = jnp.asarray(cam_latents, jnp.float32)  # [b, f, h, w, C]
        if conditioning == "no_camera":
            cam = jnp.zeros_like(cam)
        if content_latents is None:
            content = jnp.zeros_like(cam)  # I2V: no content reference
        else:
            content = jnp.asarray(content_latents, jnp.float32)  # [b, f, h, w, C]
            if content.shape != cam.shape:
                raise ValueError(f"content reference latents {content.shape} differ from the "
                                 f"camera reference's {cam.shape}")
            content = jnp.where(_per_example(task == V2V, content), content, 0.0)
        out.update(cam_latents=cam, content_latents=content)
    if dit_cfg.cond_channels:
        if image_latents is None:
            raise ValueError("this I2V-base model needs the first-frame condition (latents of "
                             "[first frame, zeros...]): latent records need i2v_latents "
                             "(encode with --i2v), sampling an image or a content video")
        cond = first_frame_condition(jnp.asarray(image_latents, jnp.float32))  # [b, f, h, w, 4+C]
        if cond.shape[-1] != dit_cfg.cond_channels:
            raise ValueError(f"first-frame condition has {cond.shape[-1]} channels, the model's "
                             f"patch embedding expects {dit_cfg.cond_channels}")
        keep = has_first_frame(task, first_frame_rule(conditioning, v2v_first_frame))  # [b]
        out["first_frame"] = jnp.where(_per_example(keep, cond), cond, 0.0)
    if dit_cfg.image_dim is not None:
        if image_embeds is None:
            raise ValueError("this model has image cross-attention: it needs image_embeds (CLIP "
                             "tokens of the first frame; set config.clip_checkpoint / --clip)")
        out["image_embeds"] = jnp.asarray(image_embeds)  # [b, n, d]
    return out
