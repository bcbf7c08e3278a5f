"""Geometry helpers and bundle adjustment on exact synthetic data."""
import numpy as np
import pytest

from camclone_jax.eval import bundle, geometry


def test_rodrigues_log_roundtrip_including_near_pi():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 3))
    vecs *= (rng.uniform(0, np.pi - 1e-4, 20) / np.linalg.norm(vecs, axis=1))[:, None]
    vecs[0] = 0.0
    vecs[1] = [0.0, np.pi - 1e-5, 0.0]
    rot = geometry.rodrigues(vecs)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.tile(np.eye(3), (20, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(geometry.rodrigues(geometry.rotation_log(rot)), rot, atol=1e-6)


def test_kabsch_and_ransac_rotation_recover_a_rotation_with_outliers():
    rng = np.random.default_rng(1)
    truth = geometry.rodrigues(np.array([0.1, -0.3, 0.2]))
    src = geometry.unit(rng.normal(size=(100, 3)) + [0, 0, 3])
    dst = src @ truth.T
    np.testing.assert_allclose(geometry.kabsch(src, dst), truth, atol=1e-12)
    dst[:30] = geometry.unit(rng.normal(size=(30, 3)))  # 30% outliers
    rot, inliers = geometry.ransac_rotation(src, dst, 1e-3, rng)
    np.testing.assert_allclose(rot, truth, atol=1e-9)
    assert inliers[30:].all() and inliers[:30].sum() <= 1


def test_triangulate_exact_points():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-1, 1, (50, 3)) + [0, 0, 6]
    rot = geometry.rodrigues(rng.normal(0, 0.05, (4, 3)))
    trans = rng.normal(0, 0.5, (4, 3))
    cam = geometry.transform(rot, trans, pts)  # [4, 50, 3]
    rays = cam / cam[..., 2:]
    mask = np.ones((4, 50), bool)
    mask[1:, 0] = False  # point 0 seen once: not triangulated
    cam, pt = np.nonzero(mask)
    got = geometry.triangulate_obs(rays[cam, pt], rot[cam], trans[cam], pt, 50)
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1:], pts[1:], atol=1e-8)


@pytest.mark.parametrize("rotation_only", [False, True])
def test_bundle_adjustment_recovers_perturbed_poses(rotation_only):
    rng = np.random.default_rng(3)
    cams, num_pts = 6, 80
    rot = geometry.rodrigues(rng.normal(0, 0.1, (cams, 3)))
    rot[0] = np.eye(3)
    trans = np.zeros((cams, 3)) if rotation_only else rng.normal(0, 0.5, (cams, 3))
    trans[0] = 0.0
    pts = (geometry.unit(rng.normal(size=(num_pts, 3)) * [0.3, 0.3, 1] + [0, 0, 2]) if rotation_only
           else rng.uniform(-2, 2, (num_pts, 3)) + [0, 0, 8])
    kmat = np.tile(np.array([[150.0, 0, 112], [0, 150, 64], [0, 0, 1]]), (cams, 1, 1))
    cam, pt = (a.ravel() for a in np.meshgrid(np.arange(cams), np.arange(num_pts), indexing="ij"))
    xc = np.einsum("mij,mj->mi", rot[cam], pts[pt]) + trans[cam]
    uv = np.einsum("mij,mj->mi", kmat[cam], xc / xc[:, 2:])[:, :2]
    noisy_rot = geometry.rodrigues(rng.normal(0, 0.01, (cams, 3))) @ rot
    noisy_rot[0] = np.eye(3)
    noisy_trans = trans if rotation_only else trans + np.r_[0, np.ones(cams - 1)][:, None] * 0.02
    noisy_pts = pts + rng.normal(0, 0.01, pts.shape)

    def run(observed):
        got_rot, _, _, err = bundle.bundle_adjust(noisy_rot, noisy_trans, noisy_pts, cam, pt, observed,
                                                  kmat, rotation_only=rotation_only)
        angle = np.linalg.norm(geometry.rotation_log(got_rot @ np.swapaxes(rot, 1, 2)), axis=1)
        return np.degrees(angle).max(), err

    worst, err = run(uv)  # exact observations: exact poses
    assert worst < 1e-6 and np.median(err) < 1e-6
    outliers = uv.copy()
    outliers[:10] += 25.0  # gross outliers keep large residuals under the Huber loss
    worst, err = run(outliers)
    assert worst < 1.0 and np.median(err) < 0.1 and err[:10].min() > 10


@pytest.mark.parametrize("rotation_only", [False, True])
def test_grouped_schur_step_equals_the_dense_normal_equations(rotation_only):
    """The LM step built group by group (tracks of different lengths, starting at different
    cameras, as a video's are) equals the step of the full normal equations solved densely."""
    rng = np.random.default_rng(4)
    cams, num_pts, cd = 12, 60, 3 if rotation_only else 6
    starts = rng.integers(0, cams - 1, num_pts)
    lengths = rng.integers(2, cams + 1, num_pts)
    cam = np.concatenate([np.arange(s, min(cams, s + n)) for s, n in zip(starts, lengths)])
    pt = np.concatenate([np.full(min(cams, s + n) - s, p) for p, (s, n) in enumerate(zip(starts, lengths))])
    m = len(cam)
    j_cam, j_pt = rng.normal(size=(m, 2, cd)), rng.normal(size=(m, 2, 3))
    res, w = rng.normal(size=(m, 2)), rng.uniform(0.2, 1.0, m)
    lam = 1e-2
    groups = bundle._groups(cam, pt, cams, num_pts)
    assert sorted(np.concatenate([g[2] for g in groups])) == list(range(m))  # every observation once
    dc, dp = bundle._solve(j_cam, j_pt, res, w, cam, pt, cams, num_pts, lam, groups)
    jac = np.zeros((2 * m, cams * cd + num_pts * 3))  # the full Jacobian, camera 0 included
    for k in range(m):
        jac[2 * k:2 * k + 2, cam[k] * cd:(cam[k] + 1) * cd] = j_cam[k]
        jac[2 * k:2 * k + 2, cams * cd + pt[k] * 3:cams * cd + (pt[k] + 1) * 3] = j_pt[k]
    wts = np.repeat(w, 2)
    hess = jac.T @ (jac * wts[:, None])
    grad = jac.T @ (res.ravel() * wts)
    diag = np.diag(np.diag(hess))
    point_block = np.arange(cams * cd, hess.shape[0])
    hess = hess + lam * diag + 1e-9 * np.eye(len(hess)) * np.isin(np.arange(len(hess)), np.arange(cams * cd))
    for p in range(num_pts):  # the points' tiny trace-scaled damping, as _solve adds it
        idx = point_block[p * 3:(p + 1) * 3]
        hess[np.ix_(idx, idx)] += 1e-9 * (np.trace(hess[np.ix_(idx, idx)] - lam * diag[np.ix_(idx, idx)]) + 1e-9) * np.eye(3)
    free = np.arange(cd, len(hess))  # camera 0 is fixed
    step = np.zeros(len(hess))
    step[free] = np.linalg.solve(hess[np.ix_(free, free)], -grad[free])
    np.testing.assert_allclose(dc, step[:cams * cd].reshape(cams, cd), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dp, step[cams * cd:].reshape(num_pts, 3), rtol=1e-6, atol=1e-9)


def test_triangulate_obs_of_a_subset_matches_all_points():
    """Points triangulated from a subset of the observations (compact point indices, as
    sfm.Reconstruction.triangulate_obs passes them) equal those of the whole set."""
    rng = np.random.default_rng(5)
    pts = rng.uniform(-1, 1, (30, 3)) + [0, 0, 5]
    rot = geometry.rodrigues(rng.normal(0, 0.05, (5, 3)))
    trans = rng.normal(0, 0.5, (5, 3))
    rays = geometry.transform(rot, trans, pts)  # [5, 30, 3]
    rays = rays / rays[..., 2:] + rng.normal(0, 1e-3, rays.shape) * [1, 1, 0]
    mask = rng.uniform(size=(5, 30)) < 0.7
    cam, pt = np.nonzero(mask)
    every = geometry.triangulate_obs(rays[cam, pt], rot[cam], trans[cam], pt, 30)
    subset = np.flatnonzero(np.arange(30) % 3 == 0)  # points 0, 3, 6, ...
    sel = np.isin(pt, subset)
    local = np.searchsorted(subset, pt[sel])
    some = geometry.triangulate_obs(rays[cam, pt][sel], rot[cam[sel]], trans[cam[sel]], local, len(subset))
    np.testing.assert_allclose(some, every[subset], atol=1e-12, equal_nan=True)
    assert np.isnan(every[mask.sum(0) < 2]).all()
    good = mask.sum(0) >= 2
    np.testing.assert_allclose(every[good], pts[good], atol=0.2)  # noisy rays, short baselines
