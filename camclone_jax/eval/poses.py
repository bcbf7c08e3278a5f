"""Camera poses from a video without learned weights: KLT tracks, two-view init, PnP, bundles.

`estimate_poses(frames, intrinsics)` returns camera-to-world poses [F, 4, 4] (OpenCV axes,
relative to the first frame, translation up to scale: the largest camera distance from frame 0
is 1). The steps (`sfm.py` holds them):

1. Tracks: Shi-Tomasi corners followed by forward-backward-checked KLT (`tracks.py`).
2. Rotation-only model, always: each frame's rotation is fitted (RANSAC on bearings: the
   infinite homography K R K^-1) to the running world directions of the tracks, then a
   rotation-only bundle adjustment (points at infinity) refines them. Translations are zero.
3. Full model, when some pair of frames shows a rotation-compensated parallax (the median
   residual of a pure-rotation fit, in pixels) of at least `min_parallax_px`: initial pairs
   (a, b) are searched from several first frames (b: where the parallax reaches
   `init_parallax_px`), and each of the best few gives hypotheses from the essential matrix
   (RANSAC and LMedS) and from the decompositions of a plane homography. Each hypothesis is
   grown by PnP registration (from the neighbouring frame's pose, RANSAC when that fails),
   sweeping outwards from the pair and triangulating new tracks on the way (so the scale of
   the first pair carries along the trajectory); the few that reproject all tracks best are
   adjusted briefly, and the best after that is refined in full (step 4).
   Several hypotheses matter: on near-planar scenes and forward motion one two-view solution
   often lands in a wrong basin (a tilted translation with a compensating rotation) that
   bundle adjustment cannot leave.
4. Refinement of each model: bundle adjustment (Huber loss) with whole-track outlier rejection
   (`sfm.refine`), which removes moving objects.
5. Model selection: every track is re-fitted under both final models and the full model is
   chosen when the median reprojection error of the rotation-only model is more than
   `model_ratio` times larger (and above `min_parallax_px`); otherwise the clip is a pan, tilt,
   roll, a static shot or a translation too small to measure, and the rotation-only poses are
   returned (the homography fallback for rotation-only motion). When the rotation-only chain
   itself loses track (a long translation outruns the tracks), the full model is used alone.
   The full model is fitted first; the rotation-only model's refinement stops after one
   screening round when it cannot win (see `_rotation_model`).

Every stage costs in proportion to the track observations (sparse triangulation of only the
tracks a new frame sees, a bundle adjustment whose Schur complement is built from short windows
of frames), so the time grows linearly with the frame count (`benchmarks/pose_backends.py
--parts timing`; it grew quadratically before: 714 s at 81 frames of 480p).

Limits, measured on the synthetic renderer (see tests/eval/test_poses.py and
benchmarks/camera_clone.py): scenes dominated by one plane seen from above (a floor, a field)
leave the rotation-translation ambiguity nearly unresolved (errors of several degrees per frame
on some clips), foreground objects that move and fill much of the frame pull rotation-only
clips, and nearly textureless views (a close-up of a flat floor) fail with
`PoseEstimationError`. Accuracy improves quickly with resolution: 128 x 224 is the low end.

Intrinsics: normalised (fx, fy, cx, cy) per frame [F, 4] or one row [4], as RealEstate10K and
the synthetic dataset store them. When unknown they are *assumed*: square pixels, principal point
at the centre and a horizontal field of view of `DEFAULT_FOV_DEG` (60 deg), see
`default_intrinsics`. A wrong focal length biases rotation angles (most for pans and tilts) and
the translation direction; pass the true intrinsics when they are known (e.g. from the camera
reference's pose file).

Failure raises `PoseEstimationError` with the reason (too few features, tracking lost); callers
count and list such videos instead of dropping them.
"""
import dataclasses
import time

import cv2
import numpy as np
import threadpoolctl

from camclone_jax.data import video as video_lib
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import geometry, sfm
from camclone_jax.eval.sfm import PoseEstimationError  # noqa: F401  (re-exported)
from camclone_jax.eval.tracks import TrackerConfig, track_video

DEFAULT_FOV_DEG = 60.0


@dataclasses.dataclass(frozen=True)
class PoseConfig:
    """Estimator settings; pixel thresholds are in pixels of the input video.

    min_tracks: fewest shared tracks that relate two frames.
    min_parallax_px: rotation-compensated parallax below which the clip is rotation-only.
    init_parallax_px: parallax wanted for the initial pair.
    model_ratio: the full model wins when the rotation-only model's median error is this many
      times larger.
    ransac_px: inlier threshold of the essential matrix, PnP and rotation fits.
    min_angle_deg: smallest triangulation angle of a point.
    max_reproj_px: largest reprojection error of a newly triangulated point.
    huber_px: Huber threshold of the bundle adjustment.
    min_outlier_px / outlier_factor: a track whose worst residual exceeds
      max(min_outlier_px, outlier_factor x median) is rejected during refinement.
    refine_rounds / bundle_iters: adjust-and-reject rounds, LM iterations per adjustment.
    min_pnp_inliers: fewest PnP inliers that register a frame.
    pnp_inlier_frac: PnP from the neighbouring frame's pose is accepted when this share of the
      points are inliers (else RANSAC decides).
    pair_anchors / max_init_pairs: initial pairs are searched from this many evenly spaced
      first frames, and this many of them are tried.
    refine_candidates: full-model hypotheses adjusted (one round of `screen_iters` LM
      iterations) before the final choice; the chosen one is then refined in full.
    seed: seeds the RANSAC samplers (numpy and OpenCV), so results are reproducible.
    """
    tracker: TrackerConfig = TrackerConfig()
    min_tracks: int = 12
    min_parallax_px: float = 1.0
    init_parallax_px: float = 6.0
    model_ratio: float = 3.0
    ransac_px: float = 1.0
    min_angle_deg: float = 1.0
    max_reproj_px: float = 3.0
    huber_px: float = 1.0
    min_outlier_px: float = 0.75
    outlier_factor: float = 4.0
    refine_rounds: int = 3
    bundle_iters: int = 20
    min_pnp_inliers: int = 12
    pnp_inlier_frac: float = 0.7
    pair_anchors: int = 6
    max_init_pairs: int = 3
    refine_candidates: int = 3
    screen_iters: int = 8
    seed: int = 0


@dataclasses.dataclass
class PoseEstimate:
    """Estimated camera path of one video.

    c2w: float64 [F, 4, 4] camera-to-world, relative to frame 0 (c2w[0] = I), unit max distance.
    intrinsics: float64 [F, 4] normalised intrinsics used (given or assumed).
    mode: "sfm" (translation estimated) or "rotation" (rotation-only clip, zero translation).
    median_error_px: median reprojection error of all tracks under the chosen model;
    rotation_error_px: the same under the rotation-only model (the evidence for the choice).
    seconds: wall time of the estimator's stages, {stage: seconds}.
    """
    c2w: np.ndarray
    intrinsics: np.ndarray
    mode: str
    num_tracks: int
    num_inlier_tracks: int
    median_error_px: float
    rotation_error_px: float
    fallback_frames: list
    assumed_intrinsics: bool
    seconds: dict = dataclasses.field(default_factory=dict)

    def summary(self):
        """JSON-serialisable diagnostics (no poses)."""
        return {"mode": self.mode, "num_tracks": self.num_tracks,
                "num_inlier_tracks": self.num_inlier_tracks,
                "median_error_px": round(float(self.median_error_px), 4),
                "rotation_only_error_px": (None if not np.isfinite(self.rotation_error_px)
                                           else round(float(self.rotation_error_px), 4)),
                "fallback_frames": [int(f) for f in self.fallback_frames],
                "assumed_intrinsics": self.assumed_intrinsics,
                "seconds": {k: round(float(v), 2) for k, v in self.seconds.items()}}


def default_intrinsics(height, width, fov_deg=DEFAULT_FOV_DEG):
    """Assumed normalised (fx, fy, cx, cy) [4]: horizontal FOV `fov_deg`, square pixels, centred."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    fx = 0.5 / np.tan(np.radians(fov_deg) / 2)
    return np.array([fx, fx * width / height, 0.5, 0.5])


def check_frames(frames):
    """frames as a uint8 array [F, H, W, 3] with F >= 2, or ValueError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames to estimate camera motion, got {len(frames)}")
    return frames


def check_intrinsics(intrinsics, num_frames, height, width, fov_deg=DEFAULT_FOV_DEG):
    """Per-frame normalised intrinsics [F, 4] from None (assumed: `default_intrinsics` with
    `fov_deg`), [4] or [F, 4]; and whether they were assumed."""
    if intrinsics is None:
        return np.tile(default_intrinsics(height, width, fov_deg), (num_frames, 1)), True
    intr = np.asarray(intrinsics, np.float64)
    if intr.shape == (4,):
        intr = np.tile(intr, (num_frames, 1))
    if intr.shape != (num_frames, 4):
        raise ValueError(f"intrinsics must be [4] or [{num_frames}, 4] (normalised fx, fy, cx, cy), "
                         f"got {list(intr.shape)}")
    if not np.all(np.isfinite(intr)) or np.any(intr[:, :2] <= 0):
        raise ValueError("intrinsics must be finite with positive focal lengths")
    return intr, False


def relative_unit_c2w(c2w):
    """c2w [F, 4, 4] (any world frame and scale) relative to frame 0 (the identity), with the
    largest camera distance from frame 0 scaled to 1 (left as is when the camera stays put)."""
    c2w = traj_lib.relative_to_first(np.asarray(c2w, np.float64))  # [F, 4, 4]
    scale = np.linalg.norm(c2w[:, :3, 3], axis=1).max()
    if scale > 1e-12:
        c2w[:, :3, 3] /= scale
    return c2w


def _init_pairs(rec, config):
    """Candidate initial pairs (a, b) (step 3).

    From `pair_anchors` evenly spaced frames a, the first later frame b whose parallax reaches
    init_parallax_px (else the frame of largest parallax, if it reaches min_parallax_px), as
    long as they share min_tracks tracks; pairs that reach init_parallax_px first, then those
    sharing most tracks; `max_init_pairs` of them (tracks of frame 0 may not live long enough
    to give frame 0 a baseline).
    """
    num = len(rec.seen)
    stride = max(1, num // config.pair_anchors)
    pairs = []
    for a in range(0, num - 1, stride):
        best = None
        for b in range(a + 1, num):
            par, shared = rec.parallax(a, b)
            if shared < config.min_tracks:
                break
            if best is None or par > best[0]:
                best = (par, shared, b)
            if par >= config.init_parallax_px:
                best = (par, shared, b)
                break
        if best is not None and best[0] >= config.min_parallax_px:
            pairs.append((best[0] < config.init_parallax_px, -best[1], a, best[2]))
    return [(a, b) for *_, a, b in sorted(pairs)[:config.max_init_pairs]]


def _full_model(tracks, config, pairs):
    """Best full-model hypothesis: (median error px, refined Reconstruction, fallback frames)
    or None; `tracks` is an empty `sfm.Reconstruction` each hypothesis starts `fresh` from.

    Every initial pair gives hypotheses (essential matrix by RANSAC and LMedS, plane homography
    decompositions), each grown by `sfm.incremental`; `refine_candidates` of them (the best
    reprojecting of each source, then the best of the rest) are adjusted briefly and the one
    with the smallest median error over all tracks wins (before adjustment a wrong basin can
    still fit as well as the right one) and is refined in full."""
    grown = []
    for a, b in pairs:
        probe = tracks.fresh()
        candidates = [("essential", sfm.two_view(probe, a, b, method)) for method in (cv2.RANSAC, cv2.LMEDS)]
        candidates += [("plane", pose) for pose in sfm.plane_views(probe, a, b)]
        for source, pose in candidates:
            if pose is None:
                continue
            rec = tracks.fresh()
            try:
                fallback = sfm.incremental(rec, a, b, *pose)
            except PoseEstimationError:
                continue
            if fallback is not None:
                score = sfm.fit_score(rec) + len(fallback) * config.max_reproj_px ** 2 / len(rec.seen)
                grown.append((score, len(grown), source, rec, fallback))
    grown.sort(key=lambda g: g[:2])
    # the best of each source first (a wrong plane decomposition can out-score every essential
    # matrix before refinement), then the best of the rest
    picks = [next(g for g in grown if g[2] == src) for src in ("essential", "plane")
             if any(g[2] == src for g in grown)]
    picks += [g for g in grown if all(g is not p for p in picks)]
    best = None
    for *_, rec, fallback in picks[:config.refine_candidates]:
        sfm.refine(rec, rotation_only=False, rounds=1, iters=config.screen_iters)
        err = float(np.median(sfm.all_residuals(rec, rotation_only=False)))
        if best is None or err < best[0]:
            best = (err, rec, fallback)
    if best is None:
        return None
    _, rec, fallback = best
    sfm.refine(rec, rotation_only=False)
    return float(np.median(sfm.all_residuals(rec, rotation_only=False))), rec, fallback


def estimate_poses(frames, intrinsics=None, config=PoseConfig(), fov_deg=DEFAULT_FOV_DEG):
    """Camera-to-world poses of a video (see the module docstring).

    Args:
      frames: uint8 [F, H, W, 3] RGB frames, F >= 2.
      intrinsics: normalised (fx, fy, cx, cy), [4] or [F, 4]; None assumes `default_intrinsics`
        with `fov_deg` (and the estimate says so: `assumed_intrinsics`).
      config: a `PoseConfig`.
    Returns:
      a `PoseEstimate`.
    Raises:
      ValueError for malformed input; PoseEstimationError when the motion cannot be estimated.
    """
    # the linear algebra here is many small matrices: one BLAS thread is fastest, and many
    # threads on a busy machine are catastrophically slow (spinning OpenBLAS workers)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        return _estimate(frames, intrinsics, config, fov_deg)


def _estimate(frames, intrinsics, config, fov_deg):
    """`estimate_poses` under a one-thread BLAS."""
    frames = check_frames(frames)
    num_frames, height, width = frames.shape[:3]
    intr, assumed = check_intrinsics(intrinsics, num_frames, height, width, fov_deg)
    cv2.setRNGSeed(config.seed)
    clock = _Stopwatch()
    table = track_video(frames, config.tracker)  # [F, N, 2]
    clock.lap("tracks")
    kmat = traj_lib.intrinsics_matrix(intr, height, width)  # [F, 3, 3]
    rot_rec = sfm.Reconstruction(table, kmat, config)
    if rot_rec.seen[0].sum() < config.min_tracks:
        raise PoseEstimationError(f"too few trackable features in the first frame "
                                  f"({int(rot_rec.seen[0].sum())} < {config.min_tracks})")
    pairs = _init_pairs(rot_rec, config)
    full = _full_model(rot_rec, config, pairs) if pairs else None
    clock.lap("full_model")
    chosen, rot_err, rot_failure = None, np.inf, None
    try:
        rot_err = _rotation_model(rot_rec, config, None if full is None else full[0])
        chosen, mode, fallback, err = rot_rec, "rotation", [], rot_err
    except PoseEstimationError as e:  # e.g. a long translation outruns the tracks of frame 0
        rot_failure = e
    clock.lap("rotation_model")
    if full is not None:
        full_err, rec, full_fallback = full
        if rot_err > max(config.model_ratio * full_err, config.min_parallax_px):
            chosen, mode, fallback, err = rec, "sfm", full_fallback, full_err
    if chosen is None:
        raise rot_failure
    c2w = relative_unit_c2w(geometry.w2c_to_c2w(chosen.rot, chosen.trans))  # [F, 4, 4]
    return PoseEstimate(c2w=c2w, intrinsics=intr, mode=mode,
                        num_tracks=int(table.shape[1]), num_inlier_tracks=int(chosen.inlier.sum()),
                        median_error_px=err, rotation_error_px=rot_err, fallback_frames=fallback,
                        assumed_intrinsics=assumed, seconds=clock.laps)


class _Stopwatch:
    """Wall seconds of consecutive stages: `lap(name)` records the time since the last lap."""

    def __init__(self):
        self.laps, self._last = {}, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.laps[name], self._last = now - self._last, now


def _rotation_model(rec, config, full_err):
    """Fits the rotation-only model to `rec` (chain, then refinement); its median error.

    When a full model fits with median error `full_err`, one screening round
    (`screen_iters`) comes first, and the full refinement is skipped if the rotation-only
    model still errs more than 1.5 x `model_ratio` times the full model's (it cannot win: the
    rest of the refinement lowers the median error by far less; it errs like this only on
    clips that translate).
    """
    sfm.rotation_chain(rec)
    if full_err is not None:
        sfm.refine(rec, rotation_only=True, rounds=1, iters=config.screen_iters)
        err = float(np.median(sfm.all_residuals(rec, rotation_only=True)))
        if err > 1.5 * config.model_ratio * max(full_err, config.min_parallax_px):
            return err
    sfm.refine(rec, rotation_only=True)
    return float(np.median(sfm.all_residuals(rec, rotation_only=True)))


def estimate_poses_from_file(path, intrinsics=None, config=PoseConfig(), max_frames=None):
    """`estimate_poses` on a video file (decoded with `camclone_jax.data.video.read_video`)."""
    frames, _ = video_lib.read_video(path, max_frames=max_frames)
    return estimate_poses(frames, intrinsics, config)
