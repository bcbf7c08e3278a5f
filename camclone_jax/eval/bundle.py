"""Bundle adjustment: Levenberg-Marquardt on pixel residuals with a Schur complement, in numpy.

Cameras are world-to-camera (R [3, 3], t [3]); camera 0 is held fixed (the gauge). Rotations are
updated on the left, R <- exp(d) R, so their Jacobian is exact at every step. In
`rotation_only` mode translations are zero and the "points" are unit world directions (points at
infinity): the bundle adjustment of a purely rotating camera. Each observation's residual is its
reprojection error in pixels under a Huber loss (`f_scale` px, by iteratively reweighted least
squares), so tracks on moving objects lose their pull. The normal equations are reduced to the
cameras with the Schur complement (points are independent given the cameras), a dense
(6 C) x (6 C) system: small for videos. It is built point group by point group (points grouped
by the first camera that sees them, each group's cameras a short window of the video: tracks
are runs of frames), so its cost grows with the observations, not with cameras x points.
"""
import numpy as np

from camclone_jax.eval import geometry


def _skew(v):
    """Cross-product matrices [..., 3, 3] of vectors v [..., 3]."""
    z = np.zeros_like(v[..., 0])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _project(rot, trans, points, cam, pt, kmat, rotation_only):
    """Camera-frame points xc [M, 3], rotated points R X [M, 3] and pixels [M, 2]."""
    rx = (rot[cam] @ points[pt][:, :, None])[..., 0]  # [M, 3]
    xc = rx if rotation_only else rx + trans[cam]
    z = np.where(np.abs(xc[:, 2]) < 1e-9, 1e-9, xc[:, 2])
    k = kmat[cam]  # [M, 3, 3]
    pix = np.stack([k[:, 0, 0] * xc[:, 0] / z + k[:, 0, 1] * xc[:, 1] / z + k[:, 0, 2],
                    k[:, 1, 1] * xc[:, 1] / z + k[:, 1, 2]], -1)  # [M, 2]
    return xc, rx, pix


def _robust(res, f_scale):
    """Huber cost of residual vectors [M, 2] and IRLS weights [M]."""
    norm = np.linalg.norm(res, axis=1)
    cost = np.where(norm <= f_scale, norm ** 2, 2 * f_scale * norm - f_scale ** 2)
    return float(cost.sum()), np.where(norm <= f_scale, 1.0, f_scale / np.maximum(norm, 1e-12))


def _jacobians(xc, rx, cam, kmat, rot, pt_rot, rotation_only):
    """Jacobians of the pixels: wrt the camera update [M, 2, cd] and the point update [M, 2, 3]."""
    z = np.where(np.abs(xc[:, 2]) < 1e-9, 1e-9, xc[:, 2])
    k = kmat[cam]
    dpi = np.zeros((len(xc), 2, 3))  # [M, 2, 3] d pixel / d xc
    dpi[:, 0, 0] = k[:, 0, 0] / z
    dpi[:, 0, 1] = k[:, 0, 1] / z
    dpi[:, 0, 2] = -(k[:, 0, 0] * xc[:, 0] + k[:, 0, 1] * xc[:, 1]) / z ** 2
    dpi[:, 1, 1] = k[:, 1, 1] / z
    dpi[:, 1, 2] = -k[:, 1, 1] * xc[:, 1] / z ** 2
    j_rot = dpi @ -_skew(rx)  # [M, 2, 3]: d xc / d(left rotation update) = -[R X]x
    j_cam = j_rot if rotation_only else np.concatenate([j_rot, dpi], -1)  # [M, 2, cd]
    return j_cam, dpi @ pt_rot  # [M, 2, 3]


def _groups(cam, pt, num_cams, num_points):
    """Point groups of the Schur complement: [(first camera c0, camera span, observation
    indices [m], their camera offsets [m], their point indices within the group [m], group
    size)]. A group holds the points whose track length (in cameras) lies in (2^(b-1), 2^b]
    and whose first camera lies in one window of 2^b cameras, so its dense product spans at
    most 2^(b+1) cameras: short tracks (most of them) never pay for the long ones."""
    first = np.full(num_points, num_cams)
    np.minimum.at(first, pt, cam)
    last = np.zeros(num_points, np.int64)
    np.maximum.at(last, pt, cam)
    used = first < num_cams
    bucket = np.ceil(np.log2(np.maximum(last - first + 1, 1))).astype(np.int64)  # [P]
    window = np.where(used, first >> bucket, 0)
    key = np.where(used, bucket * (num_cams + 1) + window, -1)  # [P] group of each point
    groups = []
    order = np.argsort(key[pt], kind="stable")  # observations by group
    bounds = np.flatnonzero(np.diff(key[pt][order])) + 1
    for obs in np.split(order, bounds):
        members, local = np.unique(pt[obs], return_inverse=True)
        c0 = int(first[members].min())
        span = int(last[members].max()) - c0 + 1
        groups.append((c0, span, obs, cam[obs] - c0, local, len(members)))
    return groups


def _inv3(m):
    """Inverses [..., 3, 3] of 3 x 3 matrices m [..., 3, 3] (adjugate over determinant: far
    faster than np.linalg.inv on many small matrices)."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    adj = np.stack([np.stack([e * i - f * h, c * h - b * i, b * f - c * e], -1),
                    np.stack([f * g - d * i, a * i - c * g, c * d - a * f], -1),
                    np.stack([d * h - e * g, b * g - a * h, a * e - b * d], -1)], -2)
    det = a * (e * i - f * h) + b * (f * g - d * i) + c * (d * h - e * g)
    return adj / det[..., None, None]


def _solve(j_cam, j_pt, res, w, cam, pt, num_cams, num_points, lam, groups):
    """LM step (camera updates [C, cd], point updates [P, 3]) with the Schur complement."""
    cd = j_cam.shape[-1]
    jac = np.concatenate([j_cam, j_pt], -1)  # [M, 2, cd + 3]
    jac_wt = np.swapaxes(jac * w[:, None, None], 1, 2)  # [M, cd + 3, 2]
    hess = jac_wt @ jac  # [M, cd + 3, cd + 3]
    grad = (jac_wt @ res[:, :, None])[..., 0]  # [M, cd + 3]
    u = geometry.scatter_sum(cam, hess[:, :cd, :cd], num_cams)  # [C, cd, cd]
    v = geometry.scatter_sum(pt, hess[:, cd:, cd:], num_points)  # [P, 3, 3]
    wcp = hess[:, :cd, cd:]  # [M, cd, 3]
    gc = geometry.scatter_sum(cam, grad[:, :cd], num_cams)  # [C, cd]
    gp = geometry.scatter_sum(pt, grad[:, cd:], num_points)  # [P, 3]
    eye_c, eye_p = np.eye(cd), np.eye(3)
    u = u + lam * (u * eye_c + 1e-9 * eye_c)
    v = v + lam * (v * eye_p) + 1e-9 * (np.trace(v, axis1=1, axis2=2)[:, None, None] + 1e-9) * eye_p
    v_inv = _inv3(v)  # [P, 3, 3]
    y = wcp @ v_inv[pt]  # [M, cd, 3]
    # W V^-1 W^T = Z Z^T with Z = W L^-T (V = L L^T): one dense array per group and a
    # symmetric product (BLAS syrk), half the work of Y W^T
    l_inv_t = np.swapaxes(_inv3(np.linalg.cholesky(v)), 1, 2)  # [P, 3, 3]
    z = wcp @ l_inv_t[pt]  # [M, cd, 3]
    n = num_cams * cd
    schur = np.zeros((n, n))  # [C cd, C cd] = U - sum_p Z_p Z_p^T
    for c0, span, obs, offset, local, size in groups:
        dense = np.zeros((span, cd, size, 3))
        dense[offset, :, local, :] = z[obs]
        dense = dense.reshape(span * cd, -1)
        block = slice(c0 * cd, (c0 + span) * cd)
        schur[block, block] -= dense @ dense.T
    for c in range(num_cams):
        schur[c * cd:(c + 1) * cd, c * cd:(c + 1) * cd] += u[c]
    rhs = -gc.reshape(-1) + geometry.scatter_sum(
        cam, (y @ gp[pt][:, :, None])[..., 0], num_cams).reshape(-1)  # [C cd]
    free = slice(cd, n)  # camera 0 is fixed
    dc = np.zeros(n)
    dc[free] = np.linalg.solve(schur[free, free], rhs[free])
    dc = dc.reshape(num_cams, cd)
    back = geometry.scatter_sum(pt, (dc[cam][:, None, :] @ wcp)[:, 0], num_points)  # [P, 3]
    dp = (v_inv @ (-gp - back)[:, :, None])[..., 0]  # [P, 3]
    return dc, dp


def _apply(rot, trans, points, dc, dp, rotation_only):
    """Poses and points after an LM step."""
    new_rot = geometry.rodrigues(dc[:, :3]) @ rot  # [C, 3, 3]
    new_trans = trans if rotation_only else trans + dc[:, 3:]
    new_points = points + dp
    if rotation_only:
        new_points = geometry.unit(new_points)
    return new_rot, new_trans, new_points


def bundle_adjust(rot, trans, points, cam, pt, uv, kmat, rotation_only=False, f_scale=1.5,
                  max_iters=30, tol=1e-7):
    """Refines poses and points on observations.

    Args:
      rot, trans: initial world-to-camera poses [C, 3, 3], [C, 3] (camera 0 stays fixed).
      points: initial points (unit directions when rotation_only) [P, 3].
      cam, pt: int [M] camera and point index of each observation; uv: [M, 2] pixels.
      kmat: [C, 3, 3] pixel intrinsics per camera.
      f_scale: Huber threshold (px); max_iters: LM iterations; tol: stop when no camera
        parameter moves by more than this.
    Returns:
      (rot [C, 3, 3], trans [C, 3], points [P, 3], residual norms [M] in pixels).
    """
    rot, trans = np.asarray(rot, np.float64), np.asarray(trans, np.float64)
    points = np.asarray(points, np.float64)
    if rotation_only:
        trans = np.zeros_like(trans)
        points = geometry.unit(points)
    num_cams, num_points = len(rot), len(points)
    groups = _groups(cam, pt, num_cams, num_points)
    xc, rx, pix = _project(rot, trans, points, cam, pt, kmat, rotation_only)
    cost, w = _robust(pix - uv, f_scale)
    lam = 1e-3
    for _ in range(max_iters):
        j_cam, j_pt = _jacobians(xc, rx, cam, kmat, rot, rot[cam], rotation_only)
        improved = False
        for _ in range(8):
            dc, dp = _solve(j_cam, j_pt, pix - uv, w, cam, pt, num_cams, num_points, lam, groups)
            cand = _apply(rot, trans, points, dc, dp, rotation_only)
            cxc, crx, cpix = _project(*cand, cam, pt, kmat, rotation_only)
            ccost, cw = _robust(cpix - uv, f_scale)
            if ccost < cost:
                improved = True
                break
            lam *= 4.0
        if not improved:
            break
        # converged when the cameras barely move (a relative cost test would stop early: the
        # Huber cost of a few outliers dwarfs the inliers' improvements)
        done = np.abs(dc).max() < tol or (cost - ccost) < 1e-12 * cost
        (rot, trans, points), (xc, rx, pix), cost, w = cand, (cxc, crx, cpix), ccost, cw
        lam = max(lam / 3.0, 1e-9)
        if done:
            break
    return rot, trans, points, np.linalg.norm(pix - uv, axis=1)
