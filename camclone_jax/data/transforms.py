"""Per-example transforms of the triplet pipeline: record bytes -> training example.

Frame sampling rule (`frame_indices`): a clip of F frames takes frames 0, s, 2s, ...,
(F - 1) s of the video (s = `frame_stride`; s = 1 is the public release's "first F frames"),
or, with s = 0, F frames spread evenly over the whole video (round(linspace(0, n - 1, F))).
A video shorter than the clip needs is rejected (`short_video="reject"`, a bad example) or
padded by repeating its last frame (`short_video="repeat_last"`, as the release does).

Resize rule: scale by max(H / h, W / w) (bilinear, in ffmpeg) and centre-crop to H x W, as the
release. Pixels become float32 in [-1, 1] (x / 127.5 - 1), channels last (or stay uint8 with
`pixel_dtype="uint8"`, for `to_float` on the device).

Task: each example draws V2V with probability `v2v_ratio` from its own seeded generator, else
I2V, where the content reference is replaced by zeros; `task` is 0 for I2V, 1 for V2V.

A transform never raises for bad data: it returns `bad_example(index, reason)`, which the
pipeline counts, logs and skips (see pipeline.py). Configuration errors (a latent record in a
pixel pipeline, latents of another clip size) do raise.
"""
import dataclasses
import json

import numpy as np

from camclone_jax.data import records, video

I2V, V2V = 0, 1
BAD_KEY = "_bad"


class ConfigMismatchError(ValueError):
    """The data does not fit the pipeline's configuration (not a bad example: a wrong setup)."""


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """What an example looks like: clip size, frame sampling and the task mix."""
    kind: str = "mp4"  # "mp4" (decode pixels) or "latent" (pre-encoded VAE latents)
    num_frames: int = 77  # F: 77 in the paper, 81 in the public release
    height: int = 384  # 384x672 in the paper, 480x832 in the public release
    width: int = 672
    frame_stride: int = 1  # s; 0: spread F frames over the whole video
    short_video: str = "reject"  # or "repeat_last" (the public release)
    v2v_ratio: float = 0.5
    decode_threads: int = 1  # ffmpeg threads per video (each worker is a process)
    pixel_dtype: str = "float32"  # or "uint8": pixels stay 0..255 (4x less host memory and
    # inter-process traffic at 480x832x81); scale with `to_float` on the device
    text_len: int = 0  # > 0: examples carry the record's cached caption embedding as
    # text_embedding float32 [text_len, dim] (zero-padded or cut, as Wan pads to 512)

    def validate(self):
        """Raises ValueError naming the first bad field."""
        if self.kind not in records.KINDS:
            raise ValueError(f"kind must be one of {records.KINDS}, got {self.kind!r}")
        if min(self.num_frames, self.height, self.width) < 1 or self.frame_stride < 0:
            raise ValueError("num_frames, height and width must be >= 1 and frame_stride >= 0")
        if self.short_video not in ("reject", "repeat_last"):
            raise ValueError(f"short_video must be 'reject' or 'repeat_last', got {self.short_video!r}")
        if self.pixel_dtype not in ("float32", "uint8"):
            raise ValueError(f"pixel_dtype must be 'float32' or 'uint8', got {self.pixel_dtype!r}")
        if self.text_len < 0:
            raise ValueError(f"text_len must be >= 0, got {self.text_len}")
        if not 0.0 <= self.v2v_ratio <= 1.0:
            raise ValueError(f"v2v_ratio must be in [0, 1], got {self.v2v_ratio}")


class BadExample(Exception):
    """An example that cannot be used (corrupt record, unreadable or too short video)."""


def bad_example(index, reason):
    """The placeholder a transform returns for a bad example."""
    return {BAD_KEY: reason, "index": np.int64(index)}


def frames_needed(cfg):
    """Frames to decode from the start of a video (None: all of them, for frame_stride 0)."""
    return None if cfg.frame_stride == 0 else (cfg.num_frames - 1) * cfg.frame_stride + 1


def frame_indices(num_available, cfg):
    """Indices [F] of the frames a clip takes from a video of `num_available` frames."""
    f = cfg.num_frames
    if cfg.frame_stride == 0 and num_available >= f:
        return np.round(np.linspace(0, num_available - 1, f)).astype(np.int64)  # [F]
    needed = f if cfg.frame_stride == 0 else frames_needed(cfg)
    if num_available < needed and cfg.short_video == "reject":
        raise BadExample(f"too few frames: {num_available} < {needed}")
    step = max(cfg.frame_stride, 1)
    return np.minimum(np.arange(f) * step, num_available - 1)  # [F], repeat-last past the end


def to_float(frames):
    """uint8 pixels -> float32 in [-1, 1] (same shape; numpy or jax arrays)."""
    return frames.astype(np.float32) / 127.5 - 1.0


def load_clip(mp4_bytes, cfg):
    """mp4 bytes -> uint8 clip [F, H, W, 3] by the sampling and resize rules above."""
    try:
        frames, _ = video.decode_mp4_bytes(mp4_bytes, max_frames=frames_needed(cfg),
                                           size=(cfg.height, cfg.width),
                                           threads=cfg.decode_threads)  # [n, H, W, 3]
    except ValueError as e:
        raise BadExample(f"unreadable video: {e}") from None
    return frames[frame_indices(len(frames), cfg)]  # [F, H, W, 3]


def _first_frame(ff, height, width):
    image = video.decode_png(ff) if isinstance(ff, bytes) else np.asarray(ff)
    if image.shape != (height, width, 3):
        raise BadExample(f"first_frame is {image.shape}, expected {(height, width, 3)}")
    return image


def _pixel_example(rec, cfg):
    clips = {k: load_clip(rec[k]["video"], cfg) for k in records.VIDEO_KEYS}  # 3 x [F, H, W, 3]
    if cfg.pixel_dtype == "float32":
        clips = {k: to_float(v) for k, v in clips.items()}  # 3 x [F, H, W, 3] float32
    out = dict(clips, first_frame=clips["target"][0].copy())  # first_frame [H, W, 3]
    return out


def _latent_example(rec, cfg):
    info = rec["latent_info"]
    got = (info["frames"], info["height"], info["width"])
    if got != (cfg.num_frames, cfg.height, cfg.width):
        raise ConfigMismatchError(
            f"latent records encode clips of (frames, height, width) {got}, the pipeline expects "
            f"{(cfg.num_frames, cfg.height, cfg.width)}; re-encode or change the config")
    out = {k: np.asarray(rec[k]["latents"], np.float32) for k in records.VIDEO_KEYS}  # [L, h, w, C]
    if rec.get("i2v_latents") is not None:
        out["i2v_latents"] = np.asarray(rec["i2v_latents"], np.float32)  # [L, h, w, C]
    out["first_frame"] = to_float(_first_frame(rec["first_frame"], cfg.height, cfg.width))  # [H, W, 3]
    return out


def _text_embedding(rec, cfg):
    """The record's caption embedding padded/cut to [text_len, dim] float32."""
    emb = rec.get("text_embedding")
    if emb is None:
        raise ConfigMismatchError(
            "the pipeline wants cached caption embeddings (text_len > 0) but a record has no "
            "text_embedding; encode the captions with `python -m camclone_jax.data.encode ... "
            "--t5 PATH --tokenizer PATH`, or train without text (text_len=0)")
    emb = np.asarray(emb, np.float32)[:cfg.text_len]  # [<=text_len, dim]
    return np.pad(emb, ((0, cfg.text_len - len(emb)), (0, 0)))  # [text_len, dim]


def example_from_record(raw, index, rng, cfg):
    """One example dict from record bytes (see the module docstring), or `bad_example`."""
    try:
        rec = records.decode_triplet(raw)
        if rec["kind"] != cfg.kind:
            raise ConfigMismatchError(f"record {index} is of kind {rec['kind']!r}; the pipeline "
                                      f"reads kind {cfg.kind!r} (set kind={rec['kind']!r})")
        out = _pixel_example(rec, cfg) if cfg.kind == "mp4" else _latent_example(rec, cfg)
        if cfg.text_len:
            out["text_embedding"] = _text_embedding(rec, cfg)  # [text_len, dim]
    except ConfigMismatchError:
        raise
    except (BadExample, ValueError) as e:
        return bad_example(index, f"{type(e).__name__}: {e}")
    task = V2V if rng.random() < cfg.v2v_ratio else I2V
    if task == I2V:
        out["content_ref"] = np.zeros_like(out["content_ref"])  # no content video
    out.update(task=np.int32(task), caption=rec["caption"], index=np.int64(index))
    return out


class TripletTransform:
    """Grain random-map transform: (index, raw record) -> example dict or a bad placeholder.

    A raw record is the record bytes, or a dict with a "record" entry (a TFDS data source).
    """

    def __init__(self, cfg):
        cfg.validate()
        self.cfg = cfg

    def random_map(self, element, rng):
        """Grain's RandomMapTransform protocol."""
        index, raw = element
        if isinstance(raw, dict):
            raw = raw.get("record")
            raw = raw.item() if isinstance(raw, np.ndarray) else raw
        return example_from_record(raw, int(index), rng, self.cfg)

    __call__ = random_map

    def __repr__(self):
        return f"TripletTransform({json.dumps(dataclasses.asdict(self.cfg))})"
