"""A camera measure that holds at tiny sizes: per-frame global image motion turned into rotations.

The SfM pose estimator (poses.py) needs many tracked features and fails on small, short clips
(docs/results.md). For rotation-dominated camera moves (pan, tilt, roll; a dolly adds a zoom
and no rotation) the whole image moves by one homography per frame pair, H = K R^T K^-1 for a
camera that turns by R (c2w_i = c2w_{i-1} R, OpenCV axes). This module fits that image motion
and reads R back from it:

  1. per consecutive pair, the translation by phase correlation (cv2.phaseCorrelate, sub-pixel),
     then ECC alignment (cv2.findTransformECC) to a Euclidean warp (rotation + translation),
     mapping frame i-1's pixels to frame i's;
  2. R from that warp by the small-angle reading of the centre's shift and the image rotation:
     pan a = -atan(dx / fx), tilt a = atan(dy / fy), roll = -theta (trajectories.py has the
     axes), composed as rot_y(pan) rot_x(tilt) rot_z(roll) ("euclidean");
  3. ("rotation", the default) R refined by aligning the frames directly under the rotation
     homography with a zoom, H = K diag(z, z, 1) R^T K^-1 (4 parameters: the zoom absorbs a
     dolly's scale change), robust (Cauchy) least squares on the blurred grey pixels, the pair
     rescaled together to a standard contrast (CONTRAST: the robust scale and the cost of a
     pixel that leaves the frame are then the same for a dim frame as for a bright one; without
     it a low-contrast pair matched best unmoved, its pixels all inside) (scipy:
     the moving subject is an outlier to the camera's motion; a pixel that leaves the frame
     costs a typical mismatch), starting from step 2's R, the identity, rolls of +-15, 30 and
     45 degrees and the previous pair's R, keeping the best fit; the pair fails when under
     half of its pixels then stay in the frame and match (within 3 x ROBUST_SCALE). A
     Euclidean warp is biased for wide lenses (the image's edges move more than its centre
     under a pan) and misses moves that are not in-plane; this fit is not;
  4. c2w by chaining the relative rotations from the identity (no translation: the measure
     scores rotation only, i.e. RotErr).

A pair whose alignment fails makes the clip a failure; ``estimate`` returns None for it, so a
success rate is reported next to the error, as for the SfM poses. Validation on ground truth:
benchmarks/global_motion_check.py (docs/results.md, issue 17).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import optimize

from camclone_jax.data.synthetic.trajectories import rot_x, rot_y, rot_z
from camclone_jax.eval.geometry import rodrigues, rotation_log

MODELS = ("rotation", "euclidean")
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
ROBUST_LOSS, ROBUST_SCALE = "cauchy", 0.02  # moving subjects are outliers to the camera's motion
ROLL_INITS_DEG = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)  # extra starts: ECC misses big rolls
MIN_AGREEMENT = 0.5  # a rotation fit fails when fewer of the frame's pixels match
OUTSIDE = 0.1  # residual of a pixel that leaves the frame: a typical mismatch
BOUNDS = ([-1.2, -1.2, -1.2, -0.5], [1.2, 1.2, 1.2, 0.5])  # axis-angle (rad) and log zoom
CONTRAST, FLAT = 0.3, 0.01  # the pair's grey standard deviation after rescaling; at most
# CONTRAST / FLAT times amplified (a flat pair stays flat instead of becoming noise)


def _grey(frame) -> np.ndarray:
    """uint8 or float RGB [H, W, 3] (or grey [H, W]) -> float32 grey [H, W] in [0, 1]."""
    f = np.asarray(frame)
    f = f.astype(np.float32) / (255.0 if f.dtype == np.uint8 else 1.0)
    return f.mean(-1) if f.ndim == 3 else f


def euclidean_warp(a, b) -> np.ndarray | None:
    """The Euclidean warp W [3, 3] taking pixels of grey frame ``a`` [H, W] to where they
    appear in ``b``, or None when the alignment fails."""
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a, b, window)  # b(p + d) ~ a(p)
    warp = np.eye(3, dtype=np.float32)
    warp[0, 2], warp[1, 2] = dx, dy
    try:
        _, w = cv2.findTransformECC(a, b, warp[:2].copy(), cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA,
                                    None, 3)
    except cv2.error:
        return None
    out = np.eye(3)
    out[:2] = w
    return out


def euclidean_rotation(warp: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The camera's relative rotation R [3, 3] (c2w_i = c2w_{i-1} R) read from a Euclidean
    warp [3, 3] with pixel intrinsics K [3, 3] (small-angle reading, see the module doc)."""
    c = k[:2, 2]  # principal point [2]
    shift = warp[:2, :2] @ c + warp[:2, 2] - c  # where the centre moves [2] (dx, dy)
    theta = math.atan2(warp[1, 0] - warp[0, 1], warp[0, 0] + warp[1, 1])  # image rotation
    pan = -math.atan(shift[0] / k[0, 0])
    tilt = math.atan(shift[1] / k[1, 1])
    return rot_y(pan) @ rot_x(tilt) @ rot_z(-theta)


def rotation_homography(params, k: np.ndarray) -> np.ndarray:
    """H [3, 3] = K diag(z, z, 1) R^T K^-1 for params [4] = (axis-angle of R, log z)."""
    zoom = np.diag([math.exp(params[3]), math.exp(params[3]), 1.0])
    return k @ zoom @ rodrigues(params[:3]).T @ np.linalg.inv(k)


def _residuals(params, a, b, k):
    """Pixel differences [H * W] between ``a`` and ``b`` sampled where H(params) moves a's
    pixels; OUTSIDE where that falls off ``b`` (an outlier's cost, so that a fit cannot gain
    by shrinking the overlap)."""
    h, w = a.shape
    hom = rotation_homography(params, k)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    b_back = cv2.warpPerspective(b, hom, (w, h), flags=flags)  # b(H p) [H, W]
    inside = cv2.warpPerspective(np.ones_like(b), hom, (w, h), flags=flags) > 0.999  # [H, W]
    return np.where(inside, b_back - a, OUTSIDE).ravel()


def refine_rotation(a, b, k: np.ndarray, inits) -> tuple[np.ndarray, float]:
    """(R [3, 3], agreement) of the best rotation-and-zoom alignment of grey frames ``a`` ->
    ``b`` [H, W] from each initial rotation in ``inits`` (a list of [3, 3]); agreement is the
    fraction of a's pixels that stay in the frame and match within 3 x ROBUST_SCALE."""
    best, best_cost = None, np.inf
    for rot in inits:
        x0 = np.clip(np.concatenate([rotation_log(rot), [0.0]]), *BOUNDS)  # [4]
        fit = optimize.least_squares(_residuals, x0, args=(a, b, k), diff_step=1e-3,
                                     loss=ROBUST_LOSS, f_scale=ROBUST_SCALE, bounds=BOUNDS)
        if fit.cost < best_cost:
            best, best_cost = fit, fit.cost
    agreement = float(np.mean(np.abs(best.fun) < 3 * ROBUST_SCALE))
    return rodrigues(best.x[:3]), agreement


def standard_contrast(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames ``a``, ``b`` [H, W] shifted and scaled together (one gain for both, so the
    pair's brightness relation holds) to a pooled standard deviation of CONTRAST."""
    mean = 0.5 * (a.mean() + b.mean())
    gain = CONTRAST / max(math.sqrt(0.5 * (a.var() + b.var())), FLAT)
    return (a - mean) * gain, (b - mean) * gain


def pair_rotation(prev, nxt, k: np.ndarray, model: str = "rotation",
                  guess: np.ndarray | None = None) -> np.ndarray | None:
    """The camera's relative rotation R [3, 3] between frames ``prev`` and ``nxt`` (RGB
    [H, W, 3] or grey [H, W]) given pixel intrinsics K [3, 3]; None when the alignment fails
    (Euclidean: ECC does not converge; rotation: under MIN_AGREEMENT of the pixels match).
    ``guess`` (e.g. the previous pair's R: camera moves are smooth) is one more start."""
    if model not in MODELS:
        raise ValueError(f"unknown motion model {model!r}; choose from {MODELS}")
    a, b = _grey(prev), _grey(nxt)  # [H, W] each
    warp = euclidean_warp(a, b)
    if model == "euclidean":
        return None if warp is None else euclidean_rotation(warp, k)
    inits = [np.eye(3)] + [rot_z(math.radians(d)) for d in ROLL_INITS_DEG]
    if warp is not None:
        inits.insert(0, euclidean_rotation(warp, k))
    if guess is not None:
        inits.insert(0, guess)
    blur = (0, 0)
    a, b = cv2.GaussianBlur(a, blur, 1.0), cv2.GaussianBlur(b, blur, 1.0)
    a, b = standard_contrast(a, b)
    rot, agreement = refine_rotation(a, b, k, inits)
    return rot if agreement >= MIN_AGREEMENT else None


def estimate(frames, k: np.ndarray, model: str = "rotation") -> np.ndarray | None:
    """Rotation-only c2w [F, 4, 4] of a video (frames [F, H, W, 3]) relative to its first frame,
    given pixel intrinsics K [3, 3] (or [F, 3, 3], frame 0's is used); None if a pair fails."""
    k = np.asarray(k, np.float64)
    k = k[0] if k.ndim == 3 else k
    c2w, rot = [np.eye(4)], None
    for prev, nxt in zip(frames[:-1], frames[1:]):
        rot = pair_rotation(prev, nxt, k, model, guess=rot)
        if rot is None:
            return None
        pose = np.eye(4)
        pose[:3, :3] = c2w[-1][:3, :3] @ rot
        c2w.append(pose)
    return np.stack(c2w)  # [F, 4, 4]
