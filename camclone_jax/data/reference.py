"""Reference videos and images for sampling: any file ffmpeg reads -> uint8 frames of the clip size.

A camera (or content) reference of any container, codec, frame rate, length and size becomes
``[num_frames, height, width, 3]`` uint8 (RGB) in three steps.

1. Probe (``probe_video``): ffmpeg decodes the first video stream once to count its frames and
   read its rate and (display, i.e. rotated) size. A file ffmpeg cannot read, one without a
   video stream, and a still image where a video is expected are errors that say so.
2. Frame choice (``frame_indices``), ``sampling``:
     "first"    the first num_frames frames in a row, at the reference's own rate: the public
                release's reading and the training pipeline's (consecutive frames), so the
                motion keeps the speed it had per frame in training (the sampler's default:
                ``SampleOptions.sampling``, ``--sampling``).
     "uniform"  num_frames frames spread evenly over the whole reference,
                round(linspace(0, n - 1, num_frames)): the whole camera motion is retimed into
                the clip, whatever the reference's length and rate (these functions'
                default).
     "fps"      fps-aware: output frame k shows what a player shows at time k / fps (``fps`` =
                the output rate, 16 for Wan): source frame floor(k * src_fps / fps). The
                motion keeps its real speed and the clip covers the first (num_frames - 1) / fps
                seconds of the reference (a slower source repeats frames, a faster one skips).
   A reference with fewer frames than that ("first", "uniform": fewer than num_frames; "fps":
   shorter than the clip's duration) is an error unless ``short`` says otherwise: "loop" plays
   it again from the start (forwards each time), "pad" holds its last frame; "auto" (the
   sampler's default) is "pad" for "first" (the release repeats the last frame) and "error" otherwise.
3. Size (``fit``), done while decoding (bilinear):
     "crop"     scale by max(height / h, width / w) and centre-crop: the public release's rule,
                done as its loader does it (full-size RGB, PIL bilinear, then the crop:
                ``resize_crop_like_release``; the training pipeline does the same geometry
                in ffmpeg, ``video.resize_crop_filter``). It refuses (an
                error naming ``fit``/``max_crop``) to discard more than ``max_crop`` (default
                0.5) of the reference's height or width, e.g. a portrait phone video for a
                landscape clip, rather than silently keep a thin slice of it.
     "pad"      scale to fit inside and pad with black (letterbox / pillarbox).
     "stretch"  scale to height x width, aspect ratio not kept.
Only the chosen frames are kept while ffmpeg streams the decoded video through a pipe, so a long
reference costs decode time, not memory. Images (``load_image``) take the same ``fit`` rule;
a video given where an image is expected is an error.

Arrays are accepted too (``[n, h, w, 3]`` uint8 frames, ``[h, w, 3]`` images) for notebooks;
they take the same frame choice but must already have the target size.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile

import imageio_ffmpeg
import numpy as np
from PIL import Image

from camclone_jax.data import video

SAMPLING = ("first", "uniform", "fps")
SHORT = ("auto", "error", "loop", "pad")
FIT = ("crop", "pad", "stretch")
DEFAULT_MAX_CROP = 0.5


class ReferenceError(ValueError):
    """A reference video or image that cannot be used as asked (the message says why)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` found: decoded frame count, frame rate, display size, demuxer."""

    path: str
    frames: int
    fps: float
    width: int
    height: int
    demuxer: str
    codec: str

    @property
    def is_still_image(self) -> bool:
        """True for image files (png, jpeg, webp, ... demuxers) rather than video containers."""
        return self.demuxer == "image2" or self.demuxer.endswith("_pipe")


def _ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _reason(stderr: str) -> str:
    lines = [l.strip() for l in stderr.strip().splitlines() if l.strip()] or ["unknown error"]
    for key in ("Invalid data", "No such file", "does not contain any stream", "not found",
                "Permission denied", "moov atom not found"):
        hits = [l for l in lines if key in l]
        if hits:
            return hits[-1]
    return lines[-1]


def probe_video(path: str, what: str = "video") -> VideoInfo:
    """Decodes the first video stream of ``path`` to count its frames; reads rate and size.

    Raises FileNotFoundError for a missing file and ReferenceError (naming ``what``) for a file
    ffmpeg cannot decode or one without a video stream.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise ReferenceError(f"{what} {path} is a directory, expected a video or image file")
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0",
           "-fps_mode", "passthrough", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        if "matches no streams" in err or "does not contain any stream" in err:
            raise ReferenceError(f"{what} {path} has no video stream")
        raise ReferenceError(f"cannot read {what} {path}: {_reason(err)}")
    broken = video.damage(err)
    if broken is not None:
        raise ReferenceError(f"{what} {path} is truncated or corrupt (ffmpeg: {broken}); "
                             "re-encode or replace it")
    demuxer = re.search(r"Input #0, ([^ ]+), from", err)
    stream = re.search(r"Stream #0:\d+[^\n]*?: Video: ([^\s,]+)[^\n]*?, (\d+)x(\d+)", err)
    counts = re.findall(r"frame=\s*(\d+)", err)
    if demuxer is None or stream is None or not counts:
        raise ReferenceError(f"cannot read {what} {path}: ffmpeg reported no video frames")
    fps = re.search(r"Stream #0:\d+[^\n]*?: Video: [^\n]*?([\d.]+) fps", err)
    tbr = re.search(r"Stream #0:\d+[^\n]*?: Video: [^\n]*?([\d.]+) tbr", err)
    rate = float((fps or tbr).group(1)) if (fps or tbr) else 0.0
    width, height = int(stream.group(2)), int(stream.group(3))
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", err)
    if rotation and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg auto-rotates when decoding
    frames = int(counts[-1])
    if frames == 0:
        raise ReferenceError(f"{what} {path} has a video stream but no decodable frames")
    return VideoInfo(path=path, frames=frames, fps=rate, width=width, height=height,
                     demuxer=demuxer.group(1).rstrip(","), codec=stream.group(1))


# ------------------------------------------------------------------------------ frame choice
def frame_indices(num_available: int, num_frames: int, *, sampling: str = "uniform",
                  src_fps: float | None = None, fps: float | None = None,
                  short: str = "error", what: str = "reference video") -> np.ndarray:
    """Indices [num_frames] into a video of ``num_available`` frames (rules: module docstring)."""
    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLING}")
    if short not in SHORT:
        raise ValueError(f"unknown short-video policy {short!r}; choose from {SHORT}")
    if short == "auto":
        short = "pad" if sampling == "first" else "error"
    if num_frames < 1 or num_available < 1:
        raise ValueError(f"need num_frames >= 1 and a non-empty video, got {num_frames} and "
                         f"{num_available} frames")
    if sampling == "first":
        if num_available >= num_frames:
            return np.arange(num_frames, dtype=np.int64)  # [F]
        wanted = np.arange(num_frames)  # [F]
        need = f"{num_frames} frames"
    elif sampling == "uniform":
        if num_available >= num_frames:
            return np.round(np.linspace(0, num_available - 1, num_frames)).astype(np.int64)
        wanted = np.arange(num_frames)  # [F]: every frame, then loop or pad past the end
        need = f"{num_frames} frames"
    else:
        if not (src_fps and src_fps > 0 and fps and fps > 0):
            raise ValueError(f"fps-aware sampling needs both frame rates, got source {src_fps} "
                             f"and output {fps}")
        wanted = np.floor(np.arange(num_frames) * (src_fps / fps) + 1e-6).astype(np.int64)  # [F]
        if wanted[-1] < num_available:
            return wanted
        need = (f"{(num_frames - 1) / fps:.2f} s ({int(wanted[-1]) + 1} frames at "
                f"{src_fps:g} fps) for {num_frames} frames at {fps:g} fps")
    if short == "error":
        raise ReferenceError(
            f"{what} is too short: it has {num_available} frames, {sampling} sampling needs "
            f"{need}; pass short='loop' (--short loop) to play it again from the start, "
            f"short='pad' (--short pad) to hold its last frame, or ask for fewer frames")
    if short == "loop":
        return wanted % num_available
    return np.minimum(wanted, num_available - 1)


# ------------------------------------------------------------------------------------- sizes
def check_fit(src_hw: tuple[int, int], height: int, width: int, fit: str = "crop",
              max_crop: float = DEFAULT_MAX_CROP, what: str = "reference"):
    """Raises ReferenceError when ``fit="crop"`` would discard more than ``max_crop`` of the
    source's height or width (see the module docstring)."""
    if fit not in FIT:
        raise ValueError(f"unknown fit {fit!r}; choose from {FIT}")
    if fit != "crop":
        return
    h, w = src_hw
    scale = max(height / h, width / w)
    lost_h, lost_w = 1 - height / (h * scale), 1 - width / (w * scale)
    lost = max(lost_h, lost_w)
    if lost > max_crop + 1e-9:
        axis = "height" if lost_h > lost_w else "width"
        raise ReferenceError(
            f"{what} is {w}x{h} (aspect {w / h:.2f}), the clip {width}x{height} (aspect "
            f"{width / height:.2f}): a centre crop would discard {100 * lost:.0f}% of its {axis} "
            f"(max_crop={max_crop:g}); pass fit='pad' (--fit pad) to letterbox it, "
            "fit='stretch' (--fit stretch) to squeeze it, or a larger max_crop (--max_crop) to "
            "crop anyway")


def fit_filter(height: int, width: int, fit: str = "crop") -> str:
    """The ffmpeg filter that brings any frame to height x width by ``fit``."""
    if fit == "crop":
        return video.resize_crop_filter(height, width)
    if fit == "pad":
        return (f"format=rgb24,scale=w={width}:h={height}:force_original_aspect_ratio=decrease"
                f":flags=bilinear,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black")
    if fit == "stretch":
        return f"scale={width}:{height}:flags=bilinear"
    raise ValueError(f"unknown fit {fit!r}; choose from {FIT}")


# ----------------------------------------------------------------------------------- decoding
def resize_crop_like_release(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] -> [height, width, 3] as the public release's loader does: scale by
    s = max(width / w, height / h) to (round(w s), round(h s)) with PIL's bilinear filter (on
    full-size RGB), then a centre crop at round((size - target) / 2)."""
    h, w = frame.shape[:2]
    s = max(width / w, height / h)
    w2, h2 = round(w * s), round(h * s)
    image = np.asarray(Image.fromarray(frame).resize((w2, h2), Image.BILINEAR))  # [h2, w2, 3]
    y0, x0 = int(round((h2 - height) / 2)), int(round((w2 - width) / 2))
    return image[y0:y0 + height, x0:x0 + width]


def decode_selected(path: str, indices, height: int, width: int, fit: str = "crop",
                    what: str = "video", src_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Streams ``path`` through ffmpeg and keeps the frames at ``indices`` (any order, repeats
    allowed) -> uint8 [len(indices), height, width, 3]. ``fit="crop"`` with the source's
    (display) size ``src_hw`` decodes full-size RGB and resizes each kept frame as the release
    does (``resize_crop_like_release``); otherwise ffmpeg's filter resizes."""
    indices = np.asarray(indices, np.int64)
    wanted = set(int(i) for i in indices)
    last = max(wanted)
    release = fit == "crop" and src_hw is not None
    out_h, out_w = src_hw if release else (height, width)
    frame_bytes = out_h * out_w * 3
    vf = ["-vf", "format=rgb24"] if release else ["-vf", fit_filter(height, width, fit)]
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path,
           "-map", "0:v:0", "-fps_mode", "passthrough", *vf,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    kept: dict[int, np.ndarray] = {}
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
        try:
            n = 0
            while n <= last:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                if n in wanted:
                    frame = np.frombuffer(buf, np.uint8).reshape(out_h, out_w, 3)
                    kept[n] = (resize_crop_like_release(frame, height, width) if release
                               else frame)  # [height, width, 3]
                n += 1
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()  # everything needed was read; stop decoding the rest
            code = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace")
    missing = sorted(wanted - set(kept))
    if missing:
        detail = f": {_reason(err)}" if code not in (0, -9) and err.strip() else ""
        raise ReferenceError(f"cannot decode {what} {path}: frame {missing[0]} is missing "
                             f"(ffmpeg delivered {len(kept)} of the {len(wanted)} frames "
                             f"wanted){detail}")
    return np.stack([kept[int(i)] for i in indices])  # [F, height, width, 3]


def load_reference_video(source, num_frames: int, height: int, width: int, *,
                         sampling: str = "uniform", fps: float | None = None,
                         short: str = "error", fit: str = "crop",
                         max_crop: float = DEFAULT_MAX_CROP,
                         what: str = "reference video") -> np.ndarray:
    """A reference video (path or uint8 [n, h, w, 3] array) -> uint8 [num_frames, height, width, 3].

    See the module docstring for ``sampling`` (with ``fps`` the output frame rate), ``short``,
    ``fit`` and ``max_crop``. Errors name ``what`` (e.g. "camera reference").
    """
    if isinstance(source, np.ndarray):
        frames = _check_array(source, 4, height, width, what)
        rate = fps or 1.0  # an array is taken to be at the output rate: "fps" keeps its start
        idx = frame_indices(len(frames), num_frames, sampling=sampling, src_fps=rate, fps=rate,
                            short=short, what=what)
        return frames[idx]
    path = os.fspath(source)
    info = probe_video(path, what)
    if info.is_still_image:
        raise ReferenceError(f"{what} {path} is a still image ({info.demuxer}, {info.codec}), "
                             "expected a video; an image is the first frame (--image)")
    if sampling == "fps" and not info.fps > 0:
        raise ReferenceError(f"{what} {path} reports no frame rate; use sampling='uniform'")
    idx = frame_indices(info.frames, num_frames, sampling=sampling, src_fps=info.fps, fps=fps,
                        short=short, what=f"{what} {path}")
    check_fit((info.height, info.width), height, width, fit, max_crop, f"{what} {path}")
    return decode_selected(path, idx, height, width, fit, what, (info.height, info.width))


def load_image(source, height: int, width: int, *, fit: str = "crop",
               max_crop: float = DEFAULT_MAX_CROP, what: str = "image") -> np.ndarray:
    """An image (a path to any format ffmpeg reads, or uint8 [h, w, 3]) -> uint8 [H, W, 3]."""
    if isinstance(source, np.ndarray):
        return _check_array(source, 3, height, width, what)
    path = os.fspath(source)
    info = probe_video(path, what)
    if not info.is_still_image and info.frames > 1:
        raise ReferenceError(f"{what} {path} is a video ({info.frames} frames, {info.demuxer}), "
                             "expected a still image (png, jpg, webp, ...); a content video goes "
                             "to --content_ref, or extract one frame")
    check_fit((info.height, info.width), height, width, fit, max_crop, f"{what} {path}")
    return decode_selected(path, [0], height, width, fit, what,
                           (info.height, info.width))[0]  # [height, width, 3]


def _check_array(x: np.ndarray, ndim: int, height: int, width: int, what: str) -> np.ndarray:
    shape = "[frames, height, width, 3]" if ndim == 4 else "[height, width, 3]"
    if x.ndim != ndim or x.shape[-1] != 3:
        raise ReferenceError(f"{what} array has shape {x.shape}, expected {shape}")
    if x.dtype != np.uint8:
        raise ReferenceError(f"{what} array has dtype {x.dtype}, expected uint8 (0..255)")
    if x.shape[-3:-1] != (height, width):
        raise ReferenceError(f"{what} array is {x.shape[-2]}x{x.shape[-3]} (WxH), the clip is "
                             f"{width}x{height}; resize it first or pass a file path (files are "
                             "resized by the fit rule)")
    if ndim == 4 and len(x) == 0:
        raise ReferenceError(f"{what} array has no frames")
    return x
