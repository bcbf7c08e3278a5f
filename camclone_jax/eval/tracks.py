"""Feature tracks through a video: Shi-Tomasi corners followed by pyramidal Lucas-Kanade (KLT).

`track_video` turns frames [F, H, W, 3] into a dense track table: points [F, N, 2] in pixels of
the input resolution (x right, y down, see "Coordinates"), NaN where track n is not seen in
frame f. Tracks start in the first frame and are replenished in every frame where the image
holds fewer than `max_corners` live tracks; a track ends when the forward-backward KLT check
fails (the point tracked back lands more than `fb_threshold` px away), when re-tracking it from
the frame where it was detected disagrees (`anchor_refine`), or when it leaves the image. No
neural network and no weights: only OpenCV.

Coordinates: OpenCV puts pixel (i, j)'s centre at (j, i); the camera model of camclone_jax
(normalised intrinsics, `trajectories.intrinsics_matrix`) puts it at (j + 0.5, i + 0.5). The
table is returned in the latter convention, so `K^-1 [u, v, 1]` is the ray through the point.
"""
import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """KLT tracker settings (sizes in pixels of the tracked resolution).

    max_side: frames are downscaled (area filter) so their longer side is at most this, for
      speed; the table is scaled back to input pixels.
    max_corners / quality / min_distance_frac: Shi-Tomasi detection; min_distance is
      `min_distance_frac * longer side` (>= 3 px).
    win / levels: KLT window side and pyramid levels (small windows: a window that straddles a
      depth edge mixes two motions and biases the track; 21 px windows tripled the orbit
      rotation error on 128 x 224 synthetic clips).
    fb_threshold: forward-backward consistency threshold (px).
    border: tracks closer than this to the image border are ended.
    anchor_refine: after each frame-to-frame step, re-track every point from the frame where
      it was detected (starting at the stepped position): frame-to-frame KLT accumulates a small
      drift that, being correlated across tracks, biases rotations by degrees through the
      rotation-translation ambiguity; tracking against the anchor removes it.
    anchor_max_shift: a track whose anchor refinement moves it further than this (px) ends.
    anchor_max_age: re-anchor a track at its current frame after this many frames (0: never;
      re-anchoring keeps tracks alive through strong rotation and zoom but lets drift back in:
      on the synthetic orbits it doubled the rotation error).
    Every frame-to-frame step starts from the previous step's image motion (a homography),
    so fast pans and rolls stay within the KLT pyramid's reach.
    """
    max_side: int = 640
    max_corners: int = 600
    quality: float = 0.005
    min_distance_frac: float = 0.015
    win: int = 11
    levels: int = 4
    fb_threshold: float = 0.7
    border: float = 2.0
    anchor_refine: bool = True
    anchor_max_shift: float = 1.0
    anchor_max_age: int = 0


def _gray(frame, scale):
    """uint8 gray image [h, w] of an RGB frame [H, W, 3], resized by `scale` (<= 1)."""
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        size = (max(8, round(gray.shape[1] * scale)), max(8, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def _detect(gray, live, config, min_distance):
    """New corners [M, 2] (OpenCV pixel coordinates) away from the live points [L, 2]."""
    want = config.max_corners - len(live)
    if want < config.max_corners // 10:
        return np.zeros((0, 2), np.float32)
    mask = np.full(gray.shape, 255, np.uint8)
    b = int(np.ceil(config.border)) + 1
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = 0, 0, 0, 0
    for x, y in np.round(live).astype(int):
        cv2.circle(mask, (int(x), int(y)), int(min_distance), 0, -1)
    found = cv2.goodFeaturesToTrack(gray, maxCorners=want, qualityLevel=config.quality,
                                    minDistance=min_distance, mask=mask, blockSize=5)
    if found is None:
        return np.zeros((0, 2), np.float32)
    return found.reshape(-1, 2).astype(np.float32)  # [M, 2]


def _predict(pts, motion):
    """Points [L, 2] moved by the 3x3 homography `motion` (constant image-space velocity)."""
    if len(pts) == 0:
        return pts
    return cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float32), motion).reshape(-1, 2)


def _motion(prev_ids, prev_pts, ids, pts):
    """Homography [3, 3] from the previous frame's points to this frame's (RANSAC over the
    tracks in both), the identity when fewer than 12 tracks are shared."""
    _, ia, ib = np.intersect1d(prev_ids, ids, return_indices=True)
    if len(ia) < 12:
        return np.eye(3)
    hom, _ = cv2.findHomography(prev_pts[ia], pts[ib], cv2.RANSAC, 1.0, maxIters=200, confidence=0.99)
    return np.eye(3) if hom is None else hom


def _klt(prev, cur, pts, motion, config):
    """Tracks pts [L, 2] from image prev to cur, starting where the homography `motion` predicts
    (and back, for the forward-backward check); returns (new points [L, 2], ok [L] bool)."""
    if len(pts) == 0:
        return pts, np.zeros(0, bool)
    params = dict(winSize=(config.win, config.win), maxLevel=config.levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    guess = _predict(pts, motion).reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, guess, **params)
    back = _predict(p1.reshape(-1, 2), np.linalg.inv(motion)).reshape(-1, 1, 2)
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, back, **params)
    p1, p0b = p1.reshape(-1, 2), p0b.reshape(-1, 2)  # [L, 2] each
    h, w = cur.shape
    inside = ((p1[:, 0] >= config.border) & (p1[:, 0] <= w - 1 - config.border)
              & (p1[:, 1] >= config.border) & (p1[:, 1] <= h - 1 - config.border))
    fb = np.linalg.norm(p0b - pts, axis=1) < config.fb_threshold
    ok = st1.ravel().astype(bool) & st2.ravel().astype(bool) & fb & inside
    return p1, ok


def _anchor_refine(grays, cur, pts, anchors, first_pts, config):
    """Re-tracks pts [L, 2] in image cur from their anchor frames (anchors [L] frame indices,
    first_pts [L, 2] positions there); returns (refined points [L, 2], ok [L])."""
    out, ok = pts.copy(), np.zeros(len(pts), bool)
    params = dict(winSize=(config.win, config.win), maxLevel=1,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    for a in np.unique(anchors):
        sel = np.flatnonzero(anchors == a)
        p0 = first_pts[sel].reshape(-1, 1, 2).astype(np.float32)
        guess = pts[sel].reshape(-1, 1, 2).astype(np.float32).copy()
        p1, st, _ = cv2.calcOpticalFlowPyrLK(grays[a], cur, p0, guess, **params)
        p1 = p1.reshape(-1, 2)
        good = st.ravel().astype(bool) & (np.linalg.norm(p1 - pts[sel], axis=1) < config.anchor_max_shift)
        out[sel], ok[sel] = p1, good
    return out, ok


def track_video(frames, config=TrackerConfig()):
    """KLT tracks of a video.

    Args:
      frames: uint8 [F, H, W, 3] RGB frames, F >= 2.
      config: a `TrackerConfig`.
    Returns:
      float64 [F, N, 2] track table in input pixels (pixel centres at +0.5), NaN where unseen.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames to track, got {len(frames)}")
    num_frames, height, width = frames.shape[:3]
    scale = min(1.0, config.max_side / max(height, width))
    min_distance = max(3.0, config.min_distance_frac * max(height, width) * scale)
    grays = [_gray(f, scale) for f in frames]
    live_ids, live_pts = np.zeros(0, np.int64), np.zeros((0, 2), np.float32)
    anchors, first_pts = np.zeros(0, np.int64), np.zeros((0, 2), np.float32)  # per track id
    per_frame, next_id, motion = [], 0, np.eye(3)
    for f, gray in enumerate(grays):
        if f > 0:
            prev_ids, prev_pts = live_ids, live_pts
            live_pts, ok = _klt(grays[f - 1], gray, live_pts, motion, config)
            if config.anchor_refine and len(live_pts):
                refined, ok2 = _anchor_refine(grays, gray, live_pts, anchors[live_ids],
                                              first_pts[live_ids], config)
                live_pts, ok = np.where(ok2[:, None], refined, live_pts), ok & ok2
            live_ids, live_pts = live_ids[ok], live_pts[ok]
            old = (f - anchors[live_ids] >= config.anchor_max_age) & (config.anchor_max_age > 0)
            anchors[live_ids[old]] = f  # re-anchor: a long track's template follows its appearance
            first_pts[live_ids[old]] = live_pts[old]
            motion = _motion(prev_ids, prev_pts, live_ids, live_pts)
        new = _detect(gray, live_pts, config, min_distance)
        if len(new):
            new = cv2.cornerSubPix(gray, new.reshape(-1, 1, 2), (3, 3), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
            new = new.reshape(-1, 2)
        anchors = np.concatenate([anchors, np.full(len(new), f, np.int64)])
        first_pts = np.concatenate([first_pts, new.astype(np.float32)])
        live_ids = np.concatenate([live_ids, np.arange(next_id, next_id + len(new))])
        live_pts = np.concatenate([live_pts, new.astype(np.float32)])
        next_id += len(new)
        per_frame.append((live_ids.copy(), live_pts.copy()))
    table = np.full((num_frames, next_id, 2), np.nan)  # [F, N, 2]
    for f, (ids, pts) in enumerate(per_frame):
        table[f, ids] = (pts.astype(np.float64) + 0.5) / scale  # OpenCV -> centre-at-half pixels
    return table
