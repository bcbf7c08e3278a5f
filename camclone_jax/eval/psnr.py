"""PSNR of generated uint8 videos against their ground truth (the training sample, the
reproduction's quality column, the wallpaper world's held-out scores).

One formula, 10 log10(255^2 / MSE) in dB, infinite for an exact copy: ``psnr`` of one video
against its target, ``psnr_from_mse`` of a squared error pooled over several clips.
"""

from __future__ import annotations

import math

import numpy as np


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of uint8 pixels (inf for 0)."""
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def psnr(video, target) -> float:
    """PSNR (dB) of a uint8 video against a uint8 target of the same shape."""
    mse = np.mean((np.asarray(video, np.float64) - np.asarray(target, np.float64)) ** 2)
    return psnr_from_mse(float(mse))
