"""Multi-view geometry helpers in numpy for the pose estimator (OpenCV camera axes).

A camera here is a world-to-camera pair (R [3, 3], t [3]) mapping a world point X to
X_cam = R X + t; its pixel is K X_cam / z. Bearings are rays K^-1 [u, v, 1] (not normalised
unless said so). All functions are vectorised over leading axes.
"""
import numpy as np


def rodrigues(rvec):
    """Rotation matrices [..., 3, 3] from axis-angle vectors [..., 3] (angle = norm)."""
    rvec = np.asarray(rvec, np.float64)
    theta = np.linalg.norm(rvec, axis=-1)[..., None, None]  # [..., 1, 1]
    safe = np.where(theta < 1e-12, 1.0, theta)
    k = rvec / safe[..., 0]  # [..., 3]
    zero = np.zeros_like(k[..., 0])
    kx = np.stack([np.stack([zero, -k[..., 2], k[..., 1]], -1),
                   np.stack([k[..., 2], zero, -k[..., 0]], -1),
                   np.stack([-k[..., 1], k[..., 0], zero], -1)], -2)  # [..., 3, 3]
    small = theta < 1e-12
    sin, cos = np.where(small, 0.0, np.sin(theta)), np.where(small, 1.0, np.cos(theta))
    return np.eye(3) + sin * kx + (1.0 - cos) * (kx @ kx)


def rotation_log(rot):
    """Axis-angle vectors [..., 3] of rotation matrices [..., 3, 3] (inverse of `rodrigues`)."""
    rot = np.asarray(rot, np.float64)
    cos = np.clip((np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)  # [...]
    w = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                  rot[..., 1, 0] - rot[..., 0, 1]], -1)  # [..., 3] = 2 sin(theta) axis
    sin = np.sin(theta)[..., None]
    out = np.where(sin > 1e-6, w * theta[..., None] / np.maximum(2 * sin, 1e-12), w / 2)
    # near pi the antisymmetric part vanishes: take the axis from the symmetric part instead
    near_pi = theta > np.pi - 1e-3
    if np.any(near_pi):
        sym = (rot[near_pi] + np.eye(3)) / 2  # [M, 3, 3] = axis axis^T
        idx = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), -1)
        axis = sym[np.arange(len(sym)), :, idx]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        out[near_pi] = axis * theta[near_pi][..., None]
    return out


def project_to_so3(m):
    """Nearest rotation [..., 3, 3] (Frobenius) to matrices m [..., 3, 3]."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))  # [...]
    return u @ (np.eye(3) * np.stack([np.ones_like(d), np.ones_like(d), d], -1)[..., None, :]) @ vt


def kabsch(src, dst, weights=None):
    """Rotation R [3, 3] minimising sum w |dst - R src|^2 for unit vectors src, dst [N, 3]."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    m = (dst * w[:, None]).T @ src  # [3, 3] = sum w dst src^T
    return project_to_so3(m)


def unit(v):
    """Vectors [..., 3] scaled to unit length (zero vectors stay zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def angle_between(a, b):
    """Angles (radians) [...] between vectors a, b [..., 3]."""
    cos = np.sum(unit(a) * unit(b), -1)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def ransac_rotation(src, dst, threshold, rng, iters=200, min_inliers=8):
    """Robust rotation R with dst ~ R src between unit bearings [N, 3] (pure-rotation model).

    Samples 2 correspondences per hypothesis (enough to fix a rotation), all `iters` hypotheses
    scored at once; `threshold` is the angular inlier threshold in radians. Returns (R [3, 3],
    inlier mask [N]) or (None, mask) when fewer than `min_inliers` agree.
    """
    n = len(src)
    if n < max(2, min_inliers):
        return None, np.zeros(n, bool)
    first = rng.integers(0, n, iters)
    second = rng.integers(0, n - 1, iters)
    second = second + (second >= first)  # two distinct correspondences per hypothesis
    m = (dst[first, :, None] * src[first, None, :]
         + dst[second, :, None] * src[second, None, :])  # [iters, 3, 3] = sum dst src^T
    rots = project_to_so3(m)  # [iters, 3, 3]
    min_cos = np.cos(threshold)
    hits = np.einsum("kij,nj,ni->kn", rots, src, dst) > min_cos  # [iters, N]
    best = hits[np.argmax(hits.sum(1))]
    if best.sum() < min_inliers:
        return None, best
    for _ in range(3):  # refine on the inliers, re-select
        rot = kabsch(src[best], dst[best])
        inl = np.sum((src @ rot.T) * dst, -1) > min_cos
        if inl.sum() < min_inliers:
            break
        best = inl
    return kabsch(src[best], dst[best]), best


def scatter_sum(index, values, size):
    """Sums of values [M, ...] into `size` bins by index [M] (np.add.at, by bincount: faster)."""
    values = np.asarray(values, np.float64)
    flat = values.reshape(len(index), -1)  # [M, k]
    k = flat.shape[1]
    bins = (np.asarray(index)[:, None] * k + np.arange(k)).ravel()
    out = np.bincount(bins, weights=flat.ravel(), minlength=size * k)
    return out.reshape((size,) + values.shape[1:])


def triangulate_obs(rays, rot, trans, pt, num_points):
    """Linear (DLT) triangulation from sparse observations.

    Args:
      rays: [M, 3] bearings K^-1 [u, v, 1] of each observation.
      rot, trans: [M, 3, 3], [M, 3] world-to-camera pose of each observation's view.
      pt: int [M] point index of each observation.
      num_points: number of points P.
    Returns:
      world points [P, 3] (NaN for points with fewer than 2 observations): the least-squares
      solution of each point's DLT rows with the homogeneous coordinate fixed to 1 (points far
      beyond the baseline come out ill-determined; the callers' angle and reprojection tests
      reject them).
    """
    proj = np.concatenate([rot, trans[..., None]], -1)  # [M, 3, 4]
    x, y = rays[:, 0] / rays[:, 2], rays[:, 1] / rays[:, 2]  # [M] each
    r1 = x[:, None] * proj[:, 2] - proj[:, 0]  # [M, 4]
    r2 = y[:, None] * proj[:, 2] - proj[:, 1]  # [M, 4]
    ata = scatter_sum(pt, r1[:, :, None] * r1[:, None] + r2[:, :, None] * r2[:, None],
                      num_points)  # [P, 4, 4]
    count = np.bincount(pt, minlength=num_points)
    ata[count < 2] = np.eye(4)
    lhs = ata[:, :3, :3] + 1e-12 * np.trace(ata, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    pts = np.linalg.solve(lhs, -ata[:, :3, 3:])[..., 0]  # [P, 3]
    pts[count < 2] = np.nan
    return pts


def transform(rot, trans, points):
    """Camera-frame points [F, N, 3] of world points [N, 3] under poses [F, 3, 3], [F, 3]."""
    return np.einsum("fij,nj->fni", rot, points) + trans[:, None, :]


def w2c_to_c2w(rot, trans):
    """c2w [F, 4, 4] from world-to-camera rotations [F, 3, 3] and translations [F, 3]."""
    out = np.tile(np.eye(4), (len(rot), 1, 1))
    out[:, :3, :3] = np.swapaxes(rot, -1, -2)
    out[:, :3, 3] = -np.einsum("fji,fj->fi", rot, trans)
    return out
