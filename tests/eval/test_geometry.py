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
    got = geometry.triangulate(rays, rot, trans, mask)
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
