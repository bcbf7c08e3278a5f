"""A camera reading for the wallpaper world: per-frame circular image shift -> pan/tilt poses.

In the wallpaper world (``data.wallpaper``) a camera turn moves the whole image by a circular
shift. This reads that shift from any video, generated or not, by phase correlation of each
consecutive pair of frames (the normalised cross-power spectrum summed over RGB, whose inverse
FFT peaks at the shift; periodic, so the wrap-around is no error), chains the pair shifts from
frame 0 and turns them into poses with ``data.wallpaper.shift_c2w``. A pair fails when its
correlation peak is below ``min_peak`` (a peak of 1 is a perfect shift; a blur of several
shifts or a frame with no structure gives low peaks): the clip is then a failure, as for the SfM
poses, and ``estimate`` returns None.

The reading is exact on the world's ground-truth clips (benchmarks/clone_eval.py validates it on
every held-out clip first: 100% estimated, 0 deg error) and only ever sees the frames.
"""
from __future__ import annotations

import numpy as np

from camclone_jax.data.wallpaper import shift_c2w


def pair_shift(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """The circular shift (dy, dx) in pixels that moves frame ``a`` [H, W, 3] onto ``b``, in
    [-H/2, H/2) x [-W/2, W/2), and the height of the correlation peak (<= 1)."""
    a = np.asarray(a, np.float64) - np.mean(a, axis=(0, 1))
    b = np.asarray(b, np.float64) - np.mean(b, axis=(0, 1))
    cross = (np.conj(np.fft.fft2(a, axes=(0, 1))) * np.fft.fft2(b, axes=(0, 1))).sum(-1)  # [H, W]
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.ifft2(cross).real  # [H, W] peaks at the shift
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return np.array([(dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2]), float(corr.max())


def frame_shifts(frames, min_peak: float = 0.3) -> np.ndarray | None:
    """Cumulative shifts [F, 2] (pixels since frame 0) of frames [F, H, W, 3], or None when a
    consecutive pair's correlation peak is below ``min_peak``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {frames.shape}")
    out = [np.zeros(2)]
    for prev, nxt in zip(frames[:-1], frames[1:]):
        shift, peak = pair_shift(prev, nxt)
        if peak < min_peak:
            return None
        out.append(out[-1] + shift)
    return np.stack(out)


def estimate(frames, focal_px: float, min_peak: float = 0.3) -> np.ndarray | None:
    """Camera poses c2w [F, 4, 4] read from frames [F, H, W, 3], or None (a failed clip)."""
    shifts = frame_shifts(frames, min_peak)
    return None if shifts is None else shift_c2w(shifts, focal_px)
