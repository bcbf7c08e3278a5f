"""RotErr / TransErr / CamMC on hand-made trajectories, and the pose-file readers."""
import math

import numpy as np
import pytest

from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera


def _trajectory(num=9, seed=0):
    """A smooth random c2w trajectory [num, 4, 4] starting away from the origin."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    out = []
    for i in range(num):
        rot = traj_lib.rot_axis(axis, 0.05 * i) @ traj_lib.rot_y(0.3)
        centre = np.array([1.0 + 0.3 * i, -2.0, 3.0]) + rng.normal(0, 0.2, 3)
        out.append(traj_lib.make_pose(rot, centre))
    return np.stack(out)


def test_identical_trajectories_score_zero():
    c2w = _trajectory()
    m = camera.camera_metrics(c2w, c2w)
    assert m == pytest.approx({"RotErr": 0.0, "TransErr": 0.0, "CamMC": 0.0}, abs=1e-6)


def test_same_relative_motion_from_another_start_scores_zero():
    """Metrics are relative to the first frame: moving the whole path changes nothing."""
    c2w = _trajectory()
    moved = traj_lib.make_pose(traj_lib.rot_x(0.7), np.array([5.0, 1.0, -2.0]))[None] @ c2w
    assert camera.camera_metrics(moved, c2w)["RotErr"] == pytest.approx(0.0, abs=1e-6)
    assert camera.camera_metrics(moved, c2w)["TransErr"] == pytest.approx(0.0, abs=1e-6)


def test_known_rotation_offsets_give_known_roterr():
    """Rotating every frame but the first by angle a about its own axis adds a per frame."""
    num, angle = 7, math.radians(3.0)
    ref = _trajectory(num)
    gen = ref.copy()
    gen[1:, :3, :3] = ref[1:, :3, :3] @ traj_lib.rot_z(angle)
    m = camera.camera_metrics(gen, ref)
    assert m["RotErr"] == pytest.approx((num - 1) * angle, rel=1e-6)
    assert camera.camera_metrics(gen, ref, degrees=True)["RotErr"] == pytest.approx((num - 1) * 3.0, rel=1e-6)
    assert camera.camera_metrics(gen, ref, reduction="mean")["RotErr"] == pytest.approx(
        (num - 1) * angle / num, rel=1e-6)
    assert m["TransErr"] == pytest.approx(0.0, abs=1e-9)
    # CamMC: || R_gen - R_ref ||_F = 2 sqrt(2) sin(a / 2) per frame, translations equal
    assert m["CamMC"] == pytest.approx((num - 1) * 2 * math.sqrt(2) * math.sin(angle / 2), rel=1e-6)


def test_transerr_is_scale_invariant():
    ref = _trajectory(seed=1)
    gen = _trajectory(seed=2)
    scaled = gen.copy()
    scaled[:, :3, 3] *= 37.0  # another SfM scale (about the world origin)
    base = camera.camera_metrics(gen, ref)
    assert camera.camera_metrics(scaled, ref)["TransErr"] == pytest.approx(base["TransErr"], rel=1e-6)
    assert camera.camera_metrics(scaled, ref)["CamMC"] == pytest.approx(base["CamMC"], rel=1e-6)
    assert base["TransErr"] > 0.1


def test_translation_normalisation_matches_definition():
    """A dolly of 2 m against one of 1 m scores 0 (same direction); a truck scores sqrt(2)/frame."""
    num = 5
    ref = np.stack([traj_lib.make_pose(np.eye(3), [0, 0, 2.0 * i / (num - 1)]) for i in range(num)])
    dolly = np.stack([traj_lib.make_pose(np.eye(3), [0, 0, 1.0 * i / (num - 1)]) for i in range(num)])
    truck = np.stack([traj_lib.make_pose(np.eye(3), [1.0 * i / (num - 1), 0, 0]) for i in range(num)])
    assert camera.camera_metrics(dolly, ref)["TransErr"] == pytest.approx(0.0, abs=1e-8)
    want = sum(math.sqrt(2) * i / (num - 1) for i in range(num))
    assert camera.camera_metrics(truck, ref)["TransErr"] == pytest.approx(want, rel=1e-6)
    # a static trajectory keeps zero translations (no division by zero)
    static = np.tile(np.eye(4), (num, 1, 1))
    assert camera.camera_metrics(static, static)["TransErr"] == 0.0


def test_bad_inputs_raise_clear_errors():
    c2w = _trajectory(5)
    with pytest.raises(ValueError, match="differ in length"):
        camera.camera_metrics(c2w, c2w[:4])
    with pytest.raises(ValueError, match=r"\[F, 4, 4\]"):
        camera.camera_metrics(c2w[:, :3], c2w)
    bad = c2w.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        camera.camera_metrics(bad, c2w)
    with pytest.raises(ValueError, match="reduction"):
        camera.camera_metrics(c2w, c2w, reduction="max")


def test_aggregate_and_resample():
    assert camera.aggregate([{"RotErr": 1.0}, {"RotErr": 3.0}]) == {"RotErr": 2.0}
    c2w = _trajectory(9)
    picked = camera.resample_poses(c2w, 5)
    np.testing.assert_allclose(picked, c2w[[0, 2, 4, 6, 8]])


def test_realestate10k_reader_roundtrip(tmp_path):
    c2w = _trajectory(6)
    intr = np.tile([0.6, 1.05, 0.5, 0.5], (6, 1))
    rows = traj_lib.to_realestate10k(c2w, intr, np.arange(6) * 66666)
    path = tmp_path / "clip.txt"
    path.write_text(traj_lib.format_realestate10k("https://example/video", rows))
    got_c2w, got_intr = camera.read_poses(str(path))
    np.testing.assert_allclose(got_c2w, c2w, atol=1e-12)
    np.testing.assert_allclose(got_intr, intr)


def test_megasam_and_own_npz_readers(tmp_path):
    c2w = _trajectory(4)
    k = np.array([[300.0, 0, 112.0], [0, 300.0, 64.0], [0, 0, 1]])
    path = tmp_path / "megasam.npz"
    np.savez(path, cam_c2w=c2w, intrinsic=k, images=np.zeros((4, 128, 224, 3), np.uint8))
    got, intr = camera.read_poses(str(path))
    np.testing.assert_allclose(got, c2w)
    np.testing.assert_allclose(intr[0], [300 / 224, 300 / 128, 0.5, 0.5])
    own = tmp_path / "own.npz"
    camera.save_poses_npz(str(own), c2w, intr)
    got, intr2 = camera.read_poses(str(own))
    np.testing.assert_allclose(got, c2w)
    np.testing.assert_allclose(intr2, intr)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pose file not found"):
        camera.read_poses(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("header\n1 2 3\n")
    with pytest.raises(ValueError, match="19 numbers"):
        camera.read_poses(str(bad))
    npz = tmp_path / "other.npz"
    np.savez(npz, something=np.zeros(3))
    with pytest.raises(ValueError, match="cam_c2w"):
        camera.read_poses(str(npz))
    with pytest.raises(ValueError, match="unknown pose file type"):
        (tmp_path / "poses.csv").write_text("{}")
        camera.read_poses(str(tmp_path / "poses.csv"))
    (tmp_path / "poses.json").write_text("{}")  # JSON: a list of c2w or {"c2w": [...]}
    with pytest.raises(ValueError, match="poses.json: no 'c2w'"):
        camera.read_poses(str(tmp_path / "poses.json"))
