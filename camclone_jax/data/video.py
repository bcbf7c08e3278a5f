"""Video and image files: mp4 writing/reading with the ffmpeg that imageio-ffmpeg ships, PNG bytes.

Videos are uint8 arrays [frames, height, width, 3] (RGB). `write_mp4` encodes H.264 (libx264,
yuv420p, CRF 17 by default: visually lossless at small sizes, so optical flow and pose estimators
see the motion) and writes atomically: ffmpeg writes a hidden temporary file in the target folder
that is renamed into place only when encoding succeeded, so an interrupted run never leaves a
truncated mp4 under the final name. yuv420p needs even heights and widths. The ffmpeg binary
is the one that imageio-ffmpeg ships; PNG coding goes through imageio (Pillow).
"""
import errno
import io
import os
import re
import shutil
import subprocess
import tempfile

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from camclone_jax.utils import default_file_mode


def _ffmpeg(args, stdin_bytes=None):
    """Runs the bundled ffmpeg; returns (stdout bytes, stderr text, return code).

    We start ffmpeg ourselves (no preexec_fn), so CPython fork-execs it without running Python
    code in the child: safe next to JAX's threads.
    """
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin" if stdin_bytes is None else "-y"]
    proc = subprocess.run(cmd + args, input=stdin_bytes, capture_output=True, check=False)
    return proc.stdout, proc.stderr.decode("utf-8", "replace"), proc.returncode


def _last_line(text):
    lines = text.strip().splitlines() or ["unknown error"]
    causes = [l for l in lines if "Invalid data" in l or "not found" in l or "corrupt" in l.lower()]
    return (causes or lines)[-1]


# what ffmpeg prints while decoding a truncated or damaged file (it still exits 0 and hands
# over the frames before the damage)
DAMAGE_MARKERS = ("partial file", "corrupt input packet", "Packet corrupt", "Invalid NAL unit",
                  "moov atom not found", "error while decoding", "Invalid data found")


def damage(stderr: str) -> str | None:
    """The first line of ffmpeg's decoding report that says the file is truncated or damaged,
    or None. The one verdict every reader (training data, references, evaluation) applies."""
    for line in stderr.splitlines():
        if any(marker in line for marker in DAMAGE_MARKERS):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())  # without "[h264 @ 0x..]"
    return None


def _check_frames(frames):
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [frames, height, width, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if len(frames) == 0:
        raise ValueError("cannot write a video with zero frames")
    return frames


def write_mp4(path, frames, fps, crf=17):
    """Encodes frames uint8 [F, H, W, 3] to an H.264 mp4 at `path` (atomically); H, W even."""
    frames = _check_frames(frames)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264/yuv420p needs an even height and width, got {h}x{w}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=folder)
    os.close(fd)
    try:
        _, err, code = _ffmpeg(
            ["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
             "-r", repr(float(fps)), "-i", "pipe:0", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
             "-crf", str(crf), "-preset", "medium", "-threads", "1", "-movflags", "+faststart", tmp],
            stdin_bytes=np.ascontiguousarray(frames).tobytes())
        if code != 0:
            if shutil.disk_usage(folder).free < 1 << 20:  # ffmpeg misreports a full disk
                raise OSError(errno.ENOSPC, f"No space left on device (ffmpeg: "
                              f"{_last_line(err)})", path)
            raise OSError(f"ffmpeg could not encode {path}: {_last_line(err)}")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resize_crop_filter(height, width):
    """ffmpeg filter: resize by max(height / h, width / w) (bilinear) then centre-crop to
    height x width, the public release's rule, for any input size h x w."""
    s = f"max({width}/iw\\,{height}/ih)"
    return (f"scale=w='max({width}\\,round(iw*{s}))':h='max({height}\\,round(ih*{s}))'"
            f":flags=bilinear,crop={width}:{height}")


def read_video(path, max_frames=None, size=None, threads=0):
    """Decodes the first video stream of a file into (frames uint8 [F, H, W, 3], fps).

    max_frames: decode only the first frames; size=(height, width): resize + centre-crop in
    ffmpeg (`resize_crop_filter`); threads: ffmpeg decoder threads (0: ffmpeg's choice).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    args = ["-threads", str(threads), "-i", path, "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    if size is not None:
        args += ["-vf", resize_crop_filter(*size)]
    out, err, code = _ffmpeg(args + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    if code != 0:
        raise ValueError(f"cannot decode video {path}: {_last_line(err)}")
    broken = damage(err)
    if broken is not None and max_frames is None:
        raise ValueError(f"video {path} is truncated or corrupt (ffmpeg: {broken})")
    output_info = err.split("Output #0", 1)[-1]  # what ffmpeg sends us, after any auto-rotation
    size_match = re.search(r"Video: .*?, (\d+)x(\d+)[,\s]", output_info)
    fps = re.search(r"([\d.]+) fps", output_info) or re.search(r"([\d.]+) tbr", err)
    if size_match is None or fps is None:
        raise ValueError(f"cannot decode video {path}: no frame size/rate in ffmpeg's report")
    w, h = int(size_match.group(1)), int(size_match.group(2))
    if len(out) == 0 or len(out) % (w * h * 3):
        raise ValueError(f"cannot decode video {path}: {len(out)} bytes is not a whole number of "
                         f"{w}x{h} frames")
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3), float(fps.group(1))


def decode_mp4_bytes(data, max_frames=None, size=None, threads=0):
    """Like `read_video` for the bytes of an mp4 file held in memory.

    The bytes go to a private temporary file (in /dev/shm where it exists, so in RAM) because
    an mp4 whose index sits at its end cannot be decoded from a pipe.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError("cannot decode video: no mp4 bytes")
    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, tmp = tempfile.mkstemp(prefix="camclone-", suffix=".mp4", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return read_video(tmp, max_frames=max_frames, size=size, threads=threads)
    except ValueError as e:
        raise ValueError(str(e).replace(tmp, f"<{len(data)} mp4 bytes>")) from None
    finally:
        os.remove(tmp)


def encode_png(image):
    """PNG bytes of an image uint8 [H, W, 3]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    imageio.imwrite(buf, image, format="png")
    return buf.getvalue()


def decode_png(data):
    """Image uint8 [H, W, 3] from PNG bytes."""
    try:
        image = np.asarray(imageio.imread(io.BytesIO(data), format="png"))
    except Exception as e:  # imageio raises several types for corrupt data
        raise ValueError(f"cannot decode PNG bytes: {e}") from None
    return image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
