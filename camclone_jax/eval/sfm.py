"""Steps of the pose estimator: two-view init, PnP registration, rotation-only chain, refinement.

`Reconstruction` holds a video's track table, per-frame pixel intrinsics and the current
world-to-camera poses and points (world frame = camera 0). The functions here grow and refine
it; `camclone_jax.eval.poses` chooses between the rotation-only and the full model and is the
public entry point. `config` is a `poses.PoseConfig`.
"""
import cv2
import numpy as np

from camclone_jax.eval import bundle, geometry


class PoseEstimationError(RuntimeError):
    """The video's camera motion could not be estimated (the message says why)."""


class Reconstruction:
    """Tracks, rays, registered poses (`done`) and points (NaN: not triangulated) of one video."""

    def __init__(self, table, kmat, config):
        self.table, self.kmat, self.config = table, kmat, config  # [F, N, 2], [F, 3, 3]
        self.seen = ~np.isnan(table[..., 0])  # [F, N]
        uv1 = np.concatenate([table, np.ones(table.shape[:2] + (1,))], -1)  # [F, N, 3]
        self.rays = np.einsum("fij,fnj->fni", np.linalg.inv(kmat), uv1)  # [F, N, 3]
        self.focal = float(np.mean(kmat[:, 0, 0]))
        f, n = self.seen.shape
        self.rot, self.trans = np.tile(np.eye(3), (f, 1, 1)), np.zeros((f, 3))
        self.done = np.zeros(f, bool)
        self.points = np.full((n, 3), np.nan)
        self.inlier = np.ones(n, bool)  # tracks not rejected as outliers by `refine`
        self.rng = np.random.default_rng(config.seed)

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

    def reprojection(self, idx, points):
        """Pixel errors [F, n] (NaN where unseen or unregistered) and positive depth [F, n] of
        tracks idx [n] at points [n, 3] under the current poses."""
        cam = geometry.transform(self.rot, self.trans, np.nan_to_num(points))  # [F, n, 3]
        z = cam[..., 2:]
        pix = np.einsum("fij,fnj->fni", self.kmat,
                        cam / np.where(np.abs(z) < 1e-9, 1e-9, z))[..., :2]  # [F, n, 2]
        err = np.linalg.norm(pix - self.table[:, idx], axis=-1)
        err[~(self.seen[:, idx] & self.done[:, None])] = np.nan
        return err, z[..., 0] > 1e-6

    def triangulate_new(self):
        """Triangulates inlier tracks without a point that >= 2 registered views see with an
        angle of at least `min_angle_deg` and reproject within `max_reproj_px`."""
        cfg = self.config
        mask = self.seen & self.done[:, None]  # [F, N]
        todo = np.isnan(self.points[:, 0]) & (mask.sum(0) >= 2) & self.inlier
        if not todo.any():
            return
        idx = np.flatnonzero(todo)
        m = mask[:, idx]  # [F, n]
        pts = geometry.triangulate(self.rays[:, idx], self.rot, self.trans, m)  # [n, 3]
        err, front = self.reprojection(idx, pts)
        ok = (np.all(np.isfinite(pts), 1) & np.all(front | ~m, 0)
              & np.all(np.nan_to_num(err) < cfg.max_reproj_px, 0))
        dirs = np.nan_to_num(pts)[None] - self.centres()[:, None]  # [F, n, 3]
        ref = dirs[np.argmax(m, 0), np.arange(len(idx))]  # [n, 3] ray of the first view
        angle = np.where(m, geometry.angle_between(dirs, ref[None]), 0.0).max(0)  # [n]
        good = ok & (angle >= np.radians(cfg.min_angle_deg))
        self.points[idx[good]] = pts[good]

    def register_pnp(self, i):
        """Registers frame i by PnP (RANSAC, then LM) on the triangulated points; success."""
        cfg = self.config
        use = self.seen[i] & np.isfinite(self.points[:, 0])
        if use.sum() < max(cfg.min_pnp_inliers, 6):
            return False
        obj, img = self.points[use], self.table[i, use]  # [n, 3], [n, 2]
        near = np.flatnonzero(self.done)
        ref = near[np.argmin(np.abs(near - i))]
        rvec0 = geometry.rotation_log(self.rot[ref]).reshape(3, 1)
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, self.kmat[i], None, rvec0.copy(), self.trans[ref].reshape(3, 1).copy(),
            useExtrinsicGuess=True, iterationsCount=200, reprojectionError=2 * cfg.ransac_px,
            confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inl is None or len(inl) < cfg.min_pnp_inliers:
            return False
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.kmat[i], None, rvec, tvec)
        self.rot[i], self.trans[i] = geometry.rodrigues(rvec.ravel()), tvec.ravel()
        self.done[i] = True
        return True

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
        rec.triangulate_new()
    return sorted(fallback)


def fit_score(rec):
    """Truncated mean squared reprojection error (px^2) of every track seen in >= 2 frames,
    re-triangulated from all registered frames: how well a hypothesis explains the video."""
    cap = rec.config.max_reproj_px
    mask = rec.seen & rec.done[:, None]
    idx = np.flatnonzero(mask.sum(0) >= 2)
    pts = geometry.triangulate(rec.rays[:, idx], rec.rot, rec.trans, mask[:, idx])  # [n, 3]
    err, front = rec.reprojection(idx, pts)
    err = np.where(front & np.isfinite(err), np.minimum(err, cap), cap)
    return float(np.mean(err[mask[:, idx]] ** 2))


# ----------------------------------------------------------------------------- rotation only
def world_directions(rec, idx):
    """Unit world directions [n, 3] of tracks idx under the current (rotation-only) poses: the
    normalised mean of R_f^T b_f over the registered frames that see them."""
    m = (rec.seen & rec.done[:, None])[:, idx, None]  # [F, n, 1]
    world = np.einsum("fji,fnj->fni", rec.rot, geometry.unit(np.nan_to_num(rec.rays[:, idx], nan=1.0)))
    return geometry.unit(np.sum(np.where(m, world, 0.0), 0) + 1e-12)


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
    rec.points = world_directions(rec, np.arange(n))  # [N, 3]
    rec.points[rec.seen.sum(0) < 2] = np.nan  # a track seen once constrains nothing


# ----------------------------------------------------------------------------- refinement
def all_residuals(rec, rotation_only):
    """Reprojection errors (px) of every observation of every track seen in >= 2 registered
    frames, with points re-fitted to the final poses (directions, or triangulation): the
    common ground on which the two motion models are compared. Returns a flat array."""
    mask = rec.seen & rec.done[:, None]
    idx = np.flatnonzero(mask.sum(0) >= 2)
    if rotation_only:
        pts = world_directions(rec, idx)
    else:
        pts = geometry.triangulate(rec.rays[:, idx], rec.rot, rec.trans, mask[:, idx])
    err, front = rec.reprojection(idx, pts)
    err = np.where(front, err, np.inf)
    return err[mask[:, idx]]


def refine(rec, rotation_only):
    """Bundle adjustment with whole-track outlier rejection; returns the final median error.

    Tracks on moving objects or drifting features are consistently off, and even a small
    consistent bias shifts rotations by degrees (the rotation-translation ambiguity), so a
    track whose worst residual exceeds max(min_outlier_px, outlier_factor x median) is
    dropped entirely (not just its worst observations) and the adjustment is repeated.
    """
    cfg = rec.config
    valid = np.isfinite(rec.points[:, 0])
    err = np.array([np.nan])
    for rounds_left in range(cfg.refine_rounds - 1, -1, -1):
        use = valid & rec.inlier
        mask = rec.seen & rec.done[:, None] & use[None]  # [F, N]
        cam, pt = np.nonzero(mask)
        keep = np.flatnonzero(use)
        remap = np.full(len(use), -1)
        remap[keep] = np.arange(len(keep))
        rot, trans, pts, err = bundle.bundle_adjust(
            rec.rot, rec.trans, rec.points[keep], cam, remap[pt], rec.table[cam, pt], rec.kmat,
            rotation_only, f_scale=cfg.huber_px, max_iters=cfg.bundle_iters)
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
