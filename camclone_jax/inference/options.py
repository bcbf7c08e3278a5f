"""What one sample takes and gives: ``SampleOptions``, ``SampleResult``, and the small helpers
around a sample (compute dtype, mesh axes, latent encoding, the output video, peak memory).
"""

from __future__ import annotations

import dataclasses
import math
import resource

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax import tasks
from camclone_jax.data import reference
from camclone_jax.data.video import write_mp4
from camclone_jax.diffusion import sampler
from camclone_jax.inference.prompts import WAN_NEGATIVE_PROMPT

# ------------------------------------------------------------------------------ options, result
@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Everything about one sample except its inputs (defaults: the public release's setup).

    cfg None means 5 for text-conditioned models and 1 (no guidance) for text-free ones;
    cfg_batched: the cond/uncond pair as one batch of 2 (default; data parallel on a mesh) or
    two calls per step (False: half the activation memory, same work, one device's batch);
    schedule None is the solver's usual spacing (``sampler.default_spacing``); sampling, short,
    fit, max_crop: the reference rules of ``camclone_jax.data.reference`` (default: the
    release's, the first ``frames`` frames in a row, the last repeated when short); fps: the
    output frame rate (and the rate fps-aware sampling resamples to); no_camera: the
    camera-reference latent is zeroed (how a no-camera ablation, objective.conditioning
    "no_camera", was trained); task: None (V2V when a content video is given, else I2V) or
    "i2v" with a content video, which zeroes its latent and keeps its first frame (the
    release's ``--cameraclone_type i2v``); v2v_first_frame: "content" (the release: V2V is
    conditioned on the given image, else the content's first frame) or "none" (a zero
    first-frame condition and a black frame's CLIP tokens), see ``camclone_jax.tasks``.
    """

    frames: int = 81
    height: int = 480
    width: int = 832
    steps: int = 50
    shift: float = 5.0
    cfg: float | None = None
    cfg_batched: bool = True
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    seed: int = 0
    solver: str = "euler"
    order: int = 2
    schedule: str | None = None
    sampling: str = "first"
    short: str = "auto"
    fit: str = "crop"
    max_crop: float = reference.DEFAULT_MAX_CROP
    fps: float = 16.0
    no_camera: bool = False
    task: str | None = None
    v2v_first_frame: str = "content"

    def problems(self) -> list[str]:
        """What is wrong with these options whatever the model: negative or nonsensical
        numbers and unknown names (``CamClonePipeline.check_options`` adds the model's rules)."""
        out = [f"{name}={getattr(self, name)} must be >= {low}" for name, low in (
            ("frames", 1), ("height", 1), ("width", 1), ("steps", 1), ("seed", 0))
            if getattr(self, name) < low]
        out += [f"{name}={getattr(self, name)} must be positive" for name in ("shift", "fps")
                if not getattr(self, name) > 0]
        if self.cfg is not None and not self.cfg >= 0:
            out.append(f"cfg={self.cfg} must be >= 0")
        if self.order not in (1, 2, 3):
            out.append(f"order={self.order} must be 1, 2 or 3")
        if not 0 <= self.max_crop < 1:
            out.append(f"max_crop={self.max_crop} must be in [0, 1)")
        for name, allowed in (("solver", sampler.SOLVERS), ("sampling", reference.SAMPLING),
                              ("short", reference.SHORT), ("fit", reference.FIT),
                              ("v2v_first_frame", tasks.V2V_FIRST_FRAME)):
            if getattr(self, name) not in allowed:
                out.append(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.schedule is not None and self.schedule not in sampler.SPACINGS:
            out.append(f"schedule={self.schedule!r} is not one of {sampler.SPACINGS}")
        return out

    def replace(self, **changes) -> "SampleOptions":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown sample options {unknown}")
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class SampleResult:
    """A generated video and what it was made from (all uint8 [.., H, W, 3] frames)."""

    video: np.ndarray  # [F, H, W, 3]
    camera_ref: np.ndarray  # [F, H, W, 3]
    content_ref: np.ndarray | None  # [F, H, W, 3] (V2V)
    first_frame: np.ndarray | None  # [H, W, 3]
    latents: np.ndarray  # [f, h, w, C]
    task: str  # "i2v" or "v2v"
    seconds: dict
    peak_memory: dict

    def side_by_side(self) -> np.ndarray:
        """[F, H, k*W, 3]: camera reference | content reference or first frame | result."""
        panels = [self.camera_ref]
        if self.content_ref is not None:
            panels.append(self.content_ref)
        elif self.first_frame is not None:
            panels.append(np.broadcast_to(self.first_frame, self.video.shape))
        return np.concatenate(panels + [self.video], axis=2)


def to_uint8(frames) -> np.ndarray:
    x = np.round((np.asarray(frames, np.float32) + 1.0) * 127.5)  # [-1, 1] -> [0, 255]
    return np.clip(x, 0, 255).astype(np.uint8)


def peak_memory() -> dict:
    """Peak bytes so far: {"device": max over local devices or None, "host": process RSS}."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return {"device": max(peaks) if peaks else None,
            "host": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def resolve_dtype(dtype: str) -> str:
    """"auto" -> bfloat16 on GPU/TPU, float32 on CPU."""
    if dtype == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return dtype


def auto_mesh_axes(num_devices: int, batch: int, tokens: int) -> dict[str, int]:
    """Data parallel over what divides the batch (the CFG pair), context parallel over the rest
    where it divides the token count; leftover devices are not used."""
    data = math.gcd(batch, num_devices)
    context = max(c for c in range(1, num_devices // data + 1)
                  if (num_devices // data) % c == 0 and tokens % c == 0)
    return {"data": data, "context": context}


def encode_float(codec, frames) -> jnp.ndarray:
    """codec.encode of float frames [F, H, W, 3] in [-1, 1] -> latents [1, f, h, w, C]."""
    return jnp.asarray(codec.encode(jnp.asarray(frames, jnp.float32)[None]), jnp.float32)


def write_video(path: str, frames: np.ndarray, fps: float):
    """Writes uint8 frames as an H.264 mp4, atomically (no partial file on failure)."""
    if not path.lower().endswith(".mp4"):
        raise ValueError(f"output {path} must end in .mp4")
    write_mp4(path, frames, fps)


def describe(result: SampleResult) -> str:
    """One log line about a finished sample."""
    mem = result.peak_memory
    dev = f"{mem['device'] / 2**30:.2f} GiB" if mem["device"] is not None else "n/a"
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    return (f"{result.task} {result.video.shape[0]}x{result.video.shape[1]}x"
            f"{result.video.shape[2]}: {secs}; peak device memory {dev}, host "
            f"{mem['host'] / 2**30:.2f} GiB")
