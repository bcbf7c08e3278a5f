"""Bundle adjustment: Levenberg-Marquardt on pixel residuals with a Schur complement, in numpy.

Cameras are world-to-camera (R [3, 3], t [3]); camera 0 is held fixed (the gauge). Rotations are
updated on the left, R <- exp(d) R, so their Jacobian is exact at every step. In
`rotation_only` mode translations are zero and the "points" are unit world directions (points at
infinity): the bundle adjustment of a purely rotating camera. Each observation's residual is its
reprojection error in pixels under a Huber loss (`f_scale` px, by iteratively reweighted least
squares), so tracks on moving objects lose their pull. The normal equations are reduced to the
cameras with the Schur complement (points are independent given the cameras), which is a dense
(6 C) x (6 C) system: small for videos.
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
    rx = np.einsum("mij,mj->mi", rot[cam], points[pt])  # [M, 3]
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


def _solve(j_cam, j_pt, res, w, cam, pt, num_cams, num_points, lam):
    """LM step (camera updates [C, cd], point updates [P, 3]) with the Schur complement."""
    cd = j_cam.shape[-1]
    jc_w = j_cam * w[:, None, None]  # [M, 2, cd]
    jp_w = j_pt * w[:, None, None]
    u = np.zeros((num_cams, cd, cd))
    np.add.at(u, cam, np.einsum("mri,mrj->mij", jc_w, j_cam))
    v = np.zeros((num_points, 3, 3))
    np.add.at(v, pt, np.einsum("mri,mrj->mij", jp_w, j_pt))
    wcp = np.einsum("mri,mrj->mij", jc_w, j_pt)  # [M, cd, 3]
    gc = np.zeros((num_cams, cd))
    np.add.at(gc, cam, np.einsum("mri,mr->mi", jc_w, res))
    gp = np.zeros((num_points, 3))
    np.add.at(gp, pt, np.einsum("mri,mr->mi", jp_w, res))
    eye_c, eye_p = np.eye(cd), np.eye(3)
    u = u + lam * (u * eye_c + 1e-9 * eye_c)
    v = v + lam * (v * eye_p) + 1e-9 * (np.trace(v, axis1=1, axis2=2)[:, None, None] + 1e-9) * eye_p
    v_inv = np.linalg.inv(v)  # [P, 3, 3]
    y = np.einsum("mij,mjk->mik", wcp, v_inv[pt])  # [M, cd, 3]
    dense_y = np.zeros((num_cams, cd, num_points, 3))
    dense_w = np.zeros((num_cams, cd, num_points, 3))
    dense_y[cam, :, pt, :] = y
    dense_w[cam, :, pt, :] = wcp
    n = num_cams * cd
    schur = -dense_y.reshape(n, -1) @ dense_w.reshape(n, -1).T  # [C cd, C cd]
    for c in range(num_cams):
        schur[c * cd:(c + 1) * cd, c * cd:(c + 1) * cd] += u[c]
    rhs = -gc.reshape(-1) + (dense_y.reshape(n, -1) @ gp.reshape(-1))  # [C cd]
    free = slice(cd, n)  # camera 0 is fixed
    dc = np.zeros(n)
    dc[free] = np.linalg.solve(schur[free, free], rhs[free])
    dc = dc.reshape(num_cams, cd)
    back = np.zeros((num_points, 3))
    np.add.at(back, pt, np.einsum("mij,mi->mj", wcp, dc[cam]))
    dp = np.einsum("pij,pj->pi", v_inv, -gp - back)
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
    xc, rx, pix = _project(rot, trans, points, cam, pt, kmat, rotation_only)
    cost, w = _robust(pix - uv, f_scale)
    lam = 1e-3
    for _ in range(max_iters):
        j_cam, j_pt = _jacobians(xc, rx, cam, kmat, rot, rot[cam], rotation_only)
        improved = False
        for _ in range(8):
            dc, dp = _solve(j_cam, j_pt, pix - uv, w, cam, pt, num_cams, num_points, lam)
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
