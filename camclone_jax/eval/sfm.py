"""Steps of the pose estimator: two-view init, PnP registration, rotation-only chain, refinement.

`Reconstruction` holds a video's track table, per-frame pixel intrinsics and the current
world-to-camera poses and points (world frame = camera 0). The functions here grow and refine
it; `camclone_jax.eval.poses` chooses between the rotation-only and the full model and is the
public entry point. `config` is a `poses.PoseConfig`.
"""
import copy

import cv2
import numpy as np

from camclone_jax.eval import bundle, geometry


class PoseEstimationError(RuntimeError):
    """The video's camera motion could not be estimated (the message says why)."""


class Reconstruction:
    """Tracks, rays, registered poses (`done`) and points (NaN: not triangulated) of one video.

    The tracks are held twice: dense ([F, N] tables, for per-frame selections) and as a list of
    observations sorted by track (`obs_cam`, `obs_pt` [M]), on which everything that touches
    every track works, so that its cost grows with the observations, not with frames x tracks
    (tracks are replenished every frame: N grows with F).
    """

    def __init__(self, table, kmat, config):
        self.table, self.kmat, self.config = table, kmat, config  # [F, N, 2], [F, 3, 3]
        self.seen = ~np.isnan(table[..., 0])  # [F, N]
        uv1 = np.concatenate([table, np.ones(table.shape[:2] + (1,))], -1)  # [F, N, 3]
        self.rays = uv1 @ np.swapaxes(np.linalg.inv(kmat), 1, 2)  # [F, N, 3] = K^-1 [u, v, 1]
        pt, cam = np.nonzero(self.seen.T)  # sorted by track, then frame
        self.obs_cam, self.obs_pt = cam, pt  # [M] each
        self.obs_rays, self.obs_uv = self.rays[cam, pt], table[cam, pt]  # [M, 3], [M, 2]
        self.focal = float(np.mean(kmat[:, 0, 0]))
        self._reset()

    def _reset(self):
        """No frame registered, no point, every track an inlier."""
        f, n = self.seen.shape
        self.rot, self.trans = np.tile(np.eye(3), (f, 1, 1)), np.zeros((f, 3))
        self.done = np.zeros(f, bool)
        self.points = np.full((n, 3), np.nan)
        self.inlier = np.ones(n, bool)  # tracks not rejected as outliers by `refine`
        self.rng = np.random.default_rng(self.config.seed)

    def fresh(self):
        """A new, empty reconstruction of the same tracks (sharing the read-only track arrays:
        every hypothesis starts from one)."""
        new = copy.copy(self)
        new._reset()
        return new

    def centres(self):
        """Camera centres [F, 3] of the current poses."""
        return -np.einsum("fji,fj->fi", self.rot, self.trans)

    def rotation_fit(self, a, b):
        """Pure-rotation fit from frame a to b: (R_ba or None, parallax px, shared tracks).

        The parallax is the median angular residual of the fit, in pixels: ~0 for a rotating
        camera, growing with the baseline for a translating one.
        """
        common = self.seen[a] & self.seen[b]
        if common.sum() < self.config.min_tracks:
            return None, 0.0, int(common.sum())
        src, dst = geometry.unit(self.rays[a, common]), geometry.unit(self.rays[b, common])
        rot, _ = geometry.ransac_rotation(src, dst, self.config.ransac_px / self.focal, self.rng,
                                          min_inliers=self.config.min_tracks // 2)
        if rot is None:
            return None, np.inf, int(common.sum())
        parallax = np.median(geometry.angle_between(src @ rot.T, dst)) * self.focal
        return rot, float(parallax), int(common.sum())

    def parallax(self, a, b):
        """Quick (parallax px, shared tracks) of frames a, b: the median residual of a
        least-squares (not robust) rotation fit; for choosing initial pairs."""
        common = self.seen[a] & self.seen[b]
        if common.sum() < self.config.min_tracks:
            return 0.0, int(common.sum())
        src, dst = geometry.unit(self.rays[a, common]), geometry.unit(self.rays[b, common])
        rot = geometry.kabsch(src, dst)
        return float(np.median(geometry.angle_between(src @ rot.T, dst)) * self.focal), int(common.sum())

    def observations(self, tracks):
        """Indices [m] of the observations of tracks (bool [N]) in registered frames."""
        return np.flatnonzero(tracks[self.obs_pt] & self.done[self.obs_cam])

    def triangulate_obs(self, sel):
        """Points [N, 3] triangulated from observations sel [m] (sorted by track, as
        `observations` gives them); NaN for tracks with fewer than 2 of them."""
        cam, pt = self.obs_cam[sel], self.obs_pt[sel]
        starts = np.r_[True, pt[1:] != pt[:-1]]  # [m] first observation of each track
        local = geometry.triangulate_obs(self.obs_rays[sel], self.rot[cam], self.trans[cam],
                                         np.cumsum(starts) - 1, int(starts.sum()))  # [n, 3]
        out = np.full((len(self.points), 3), np.nan)
        out[pt[starts]] = local
        return out

    def reprojection(self, sel, points):
        """Pixel errors [m] and positive depth [m] of observations sel [m], their tracks at
        points [N, 3] (indexed by track), under the current poses."""
        cam, pt = self.obs_cam[sel], self.obs_pt[sel]
        xc = (self.rot[cam] @ np.nan_to_num(points[pt])[:, :, None])[..., 0] + self.trans[cam]
        z = xc[:, 2:]
        pix = (self.kmat[cam] @ (xc / np.where(np.abs(z) < 1e-9, 1e-9, z))[:, :, None])[:, :2, 0]
        return np.linalg.norm(pix - self.obs_uv[sel], axis=-1), z[:, 0] > 1e-6

    def triangulate_new(self, frame=None):
        """Triangulates inlier tracks without a point that >= 2 registered views see with an
        angle of at least `min_angle_deg` and reproject within `max_reproj_px`. With `frame`,
        only the tracks that frame sees (the others' views did not change since last time)."""
        cfg = self.config
        views = np.bincount(self.obs_pt, weights=self.done[self.obs_cam], minlength=len(self.points))
        todo = np.isnan(self.points[:, 0]) & (views >= 2) & self.inlier
        if frame is not None:
            todo &= self.seen[frame]
        if not todo.any():
            return
        sel = self.observations(todo)  # sorted by track
        pt = self.obs_pt[sel]
        pts = self.triangulate_obs(sel)  # [N, 3]
        err, front = self.reprojection(sel, pts)
        first = np.r_[True, pt[1:] != pt[:-1]]  # each track's first registered view
        starts = np.flatnonzero(first)
        idx = pt[starts]  # [n] tracks
        ok_obs = front & (np.nan_to_num(err, nan=np.inf) < cfg.max_reproj_px)
        ok = np.logical_and.reduceat(ok_obs, starts) & np.all(np.isfinite(pts[idx]), 1)
        dirs = np.nan_to_num(pts[pt]) - self.centres()[self.obs_cam[sel]]  # [m, 3]
        ref = dirs[starts][np.cumsum(first) - 1]  # [m, 3] ray of the track's first view
        angle = np.maximum.reduceat(geometry.angle_between(dirs, ref), starts)  # [n]
        good = ok & (angle >= np.radians(cfg.min_angle_deg))
        self.points[idx[good]] = pts[idx[good]]

    def register_pnp(self, i):
        """Registers frame i by PnP on the triangulated points; success.

        First from the nearest registered frame's pose (neighbouring frames barely move): LM
        on the points within 3x the median error, twice, accepted when `pnp_inlier_frac` of
        the points end within the inlier threshold; otherwise RANSAC (AP3P minimal samples),
        then LM on its inliers.
        """
        cfg = self.config
        use = self.seen[i] & np.isfinite(self.points[:, 0])
        if use.sum() < max(cfg.min_pnp_inliers, 6):
            return False
        obj, img = self.points[use], self.table[i, use]  # [n, 3], [n, 2]
        near = np.flatnonzero(self.done)
        ref = near[np.argmin(np.abs(near - i))]
        guess = (geometry.rotation_log(self.rot[ref]).reshape(3, 1), self.trans[ref].reshape(3, 1))
        limit = 2 * cfg.ransac_px
        pose = self._pnp_from_guess(obj, img, self.kmat[i], guess, limit)
        if pose is None:
            ok, _, _, inl = cv2.solvePnPRansac(
                obj, img, self.kmat[i], None, iterationsCount=100, reprojectionError=limit,
                confidence=0.999, flags=cv2.SOLVEPNP_AP3P)
            if not ok or inl is None or len(inl) < cfg.min_pnp_inliers:
                return False
            inl = inl.ravel()
            pose = cv2.solvePnPRefineLM(obj[inl], img[inl], self.kmat[i], None,
                                        guess[0].copy(), guess[1].copy())
        rvec, tvec = pose
        self.rot[i], self.trans[i] = geometry.rodrigues(rvec.ravel()), tvec.ravel()
        self.done[i] = True
        return True

    def _pnp_from_guess(self, obj, img, kmat, guess, limit):
        """(rvec, tvec) refined from `guess` by LM on gated points, or None when fewer than
        `pnp_inlier_frac` of obj [n, 3] reproject within `limit` px at the end."""
        rvec, tvec = guess[0].copy(), guess[1].copy()
        for _ in range(2):
            err = _pixel_errors(obj, img, kmat, rvec, tvec)
            keep = err < max(3 * float(np.median(err)), limit)
            if keep.sum() < self.config.min_pnp_inliers:
                return None
            rvec, tvec = cv2.solvePnPRefineLM(obj[keep], img[keep], kmat, None, rvec, tvec)
        keep = _pixel_errors(obj, img, kmat, rvec, tvec) < limit
        if keep.sum() < max(self.config.min_pnp_inliers, self.config.pnp_inlier_frac * len(obj)):
            return None
        return cv2.solvePnPRefineLM(obj[keep], img[keep], kmat, None, rvec, tvec)

    def register_rotation(self, i, ref):
        """Fallback registration: frame ref's centre and the pure-rotation fit between them."""
        rot, _, _ = self.rotation_fit(ref, i)
        if rot is None:
            return False
        centre = self.centres()[ref]
        self.rot[i] = rot @ self.rot[ref]
        self.trans[i] = -self.rot[i] @ centre
        self.done[i] = True
        return True


def _pixel_errors(obj, img, kmat, rvec, tvec):
    """Reprojection errors [n] (px) of points obj [n, 3] observed at img [n, 2]."""
    proj, _ = cv2.projectPoints(obj, rvec, tvec, kmat, None)
    return np.linalg.norm(proj.reshape(-1, 2) - img, axis=1)


# ----------------------------------------------------------------------------- full model
def _pair_points(rec, a, b):
    """Normalised image coordinates [n, 2] of the tracks frames a and b share."""
    common = rec.seen[a] & rec.seen[b]
    return (rec.rays[a, common, :2] / rec.rays[a, common, 2:],
            rec.rays[b, common, :2] / rec.rays[b, common, 2:])


def two_view(rec, a, b, method):
    """Pose (R [3, 3], t [3]) of frame b relative to frame a from the essential matrix
    (`method`: cv2.RANSAC or cv2.LMEDS) and the cheirality test, or None."""
    cfg = rec.config
    p0, p1 = _pair_points(rec, a, b)
    if len(p0) < max(cfg.min_tracks, 5):
        return None
    ess, mask = cv2.findEssentialMat(p0, p1, np.eye(3), method=method, prob=0.999,
                                     threshold=cfg.ransac_px / rec.focal)
    if ess is None or ess.shape != (3, 3):
        return None
    count, rot, trans, _ = cv2.recoverPose(ess, p0, p1, np.eye(3), mask=mask)
    return (rot, trans.ravel()) if count >= cfg.min_tracks else None


def plane_views(rec, a, b):
    """Poses (R, t) of frame b relative to frame a from a homography of their shared tracks,
    decomposed (Malis-Vargas): the hypotheses that a scene dominated by one plane (a floor, a
    field) needs, where the essential matrix is ill-determined. Keeps the solutions whose plane
    lies in front of frame a for most tracks."""
    cfg = rec.config
    p0, p1 = _pair_points(rec, a, b)
    if len(p0) < max(cfg.min_tracks, 8):
        return []
    hom, mask = cv2.findHomography(p0, p1, cv2.RANSAC, cfg.ransac_px / rec.focal)
    if hom is None or mask.sum() < cfg.min_tracks:
        return []
    _, rots, transs, normals = cv2.decomposeHomographyMat(hom, np.eye(3))
    rays0 = np.concatenate([p0, np.ones((len(p0), 1))], 1)[mask.ravel() > 0]  # [m, 3]
    out = []
    for rot, trans, normal in zip(rots, transs, normals):
        if np.mean(rays0 @ normal.ravel() > 0) > 0.9 and np.linalg.norm(trans) > 1e-9:
            out.append((rot, trans.ravel() / np.linalg.norm(trans)))
    return out


def incremental(rec, a, b, rot, trans):
    """Registers every frame from the initial pair (a, b) (frame a at the origin, frame b at
    (rot, trans)): PnP sweeping outwards (between the pair, after b, before a), new points
    triangulated after each frame. Returns the frames that needed the rotation fallback, or
    None if the initial pair triangulates too few points."""
    cfg = rec.config
    rec.done[a] = rec.done[b] = True
    rec.rot[b], rec.trans[b] = rot, trans
    rec.triangulate_new()
    if np.isfinite(rec.points[:, 0]).sum() < cfg.min_tracks:
        return None
    fallback = []
    order = list(range(b - 1, a, -1)) + list(range(b + 1, len(rec.seen))) + list(range(a - 1, -1, -1))
    for i in order:
        if not rec.register_pnp(i):
            ref = i + 1 if (i < a or a < i < b) else i - 1
            if not rec.register_rotation(i, ref):
                raise PoseEstimationError(f"tracking lost at frame {i}: neither PnP nor a "
                                          f"rotation fit to frame {ref} succeeded")
            fallback.append(i)
        rec.triangulate_new(frame=i)
    return sorted(fallback)


def fit_score(rec):
    """Truncated mean squared reprojection error (px^2) of every track seen in >= 2 frames,
    re-triangulated from all registered frames: how well a hypothesis explains the video."""
    cap = rec.config.max_reproj_px
    sel = rec.observations(_multi_view(rec))
    err, front = rec.reprojection(sel, rec.triangulate_obs(sel))
    err = np.where(front & np.isfinite(err), np.minimum(err, cap), cap)
    return float(np.mean(err ** 2))


def _multi_view(rec):
    """Tracks (bool [N]) seen in >= 2 registered frames."""
    return np.bincount(rec.obs_pt, weights=rec.done[rec.obs_cam], minlength=rec.seen.shape[1]) >= 2


# ----------------------------------------------------------------------------- rotation only
def world_directions(rec, tracks):
    """Unit world directions [N, 3] of tracks (bool [N]) under the current (rotation-only)
    poses: the normalised mean of R_f^T b_f over the registered frames that see them (zero for
    the other tracks)."""
    sel = rec.observations(tracks)
    cam = rec.obs_cam[sel]
    world = np.einsum("mji,mj->mi", rec.rot[cam], geometry.unit(rec.obs_rays[sel]))  # [m, 3]
    return geometry.unit(geometry.scatter_sum(rec.obs_pt[sel], world, len(tracks)) + 1e-12)


def rotation_chain(rec):
    """Rotation-only registration: every frame's rotation fitted (RANSAC) to the running world
    directions of the tracks it shares with earlier frames. Sets rec.points to directions."""
    cfg = rec.config
    f, n = rec.seen.shape
    dirs = np.full((n, 3), np.nan)
    dirs[rec.seen[0]] = geometry.unit(rec.rays[0, rec.seen[0]])
    rec.done[0] = True
    for i in range(1, f):
        common = rec.seen[i] & np.isfinite(dirs[:, 0])
        if common.sum() < cfg.min_tracks:
            raise PoseEstimationError(f"tracking lost at frame {i}: {int(common.sum())} tracks "
                                      f"shared with earlier frames (< {cfg.min_tracks})")
        bearings = geometry.unit(rec.rays[i, common])  # [n, 3]
        rot, _ = geometry.ransac_rotation(dirs[common], bearings, cfg.ransac_px / rec.focal,
                                          rec.rng, min_inliers=cfg.min_tracks // 2)
        if rot is None:
            raise PoseEstimationError(f"tracking lost at frame {i}: no consistent rotation")
        rec.rot[i], rec.done[i] = rot, True
        new = rec.seen[i] & np.isnan(dirs[:, 0])
        dirs[new] = geometry.unit(rec.rays[i, new]) @ rot  # rows R^T b
    rec.points = world_directions(rec, np.ones(n, bool))  # [N, 3]
    rec.points[rec.seen.sum(0) < 2] = np.nan  # a track seen once constrains nothing


# ----------------------------------------------------------------------------- refinement
def all_residuals(rec, rotation_only):
    """Reprojection errors (px) of every observation of every track seen in >= 2 registered
    frames, with points re-fitted to the final poses (directions, or triangulation): the
    common ground on which the two motion models are compared. Returns a flat array."""
    tracks = _multi_view(rec)
    sel = rec.observations(tracks)
    pts = world_directions(rec, tracks) if rotation_only else rec.triangulate_obs(sel)
    err, front = rec.reprojection(sel, pts)
    return np.where(front, err, np.inf)


def refine(rec, rotation_only, rounds=None, iters=None):
    """Bundle adjustment with whole-track outlier rejection; returns the final median error.

    rounds / iters: adjust-and-reject rounds and LM iterations per adjustment (default: the
    config's `refine_rounds` and `bundle_iters`).

    Tracks on moving objects or drifting features are consistently off, and even a small
    consistent bias shifts rotations by degrees (the rotation-translation ambiguity), so a
    track whose worst residual exceeds max(min_outlier_px, outlier_factor x median) is
    dropped entirely (not just its worst observations) and the adjustment is repeated.
    """
    cfg = rec.config
    valid = np.isfinite(rec.points[:, 0])
    err = np.array([np.nan])
    rounds = cfg.refine_rounds if rounds is None else rounds
    for rounds_left in range(rounds - 1, -1, -1):
        use = valid & rec.inlier
        mask = rec.seen & rec.done[:, None] & use[None]  # [F, N]
        cam, pt = np.nonzero(mask)
        keep = np.flatnonzero(use)
        remap = np.full(len(use), -1)
        remap[keep] = np.arange(len(keep))
        rot, trans, pts, err = bundle.bundle_adjust(
            rec.rot, rec.trans, rec.points[keep], cam, remap[pt], rec.table[cam, pt], rec.kmat,
            rotation_only, f_scale=cfg.huber_px, max_iters=iters or cfg.bundle_iters)
        rec.rot, rec.trans, rec.points[keep] = rot, trans, pts
        if rounds_left == 0:
            break
        worst = np.zeros(len(keep))
        np.maximum.at(worst, remap[pt], err)
        limit = max(cfg.min_outlier_px, cfg.outlier_factor * float(np.median(err)))
        bad = keep[worst > limit]
        if len(bad) == 0 or len(keep) - len(bad) < cfg.min_tracks:
            break
        rec.inlier[bad] = False
    return float(np.median(err))
