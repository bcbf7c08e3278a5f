"""benchmarks/camera_readout.py's targets: the image motion of a rotating camera from its poses."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import camera_readout  # noqa: E402  (benchmarks/camera_readout.py)
from camclone_jax.data.synthetic.trajectories import make_pose, rot_y, rot_z  # noqa: E402


def rotation_poses(rotation, degrees_per_frame: float, frames: int) -> np.ndarray:
    """[frames, 4, 4] camera-to-world poses turning by ``rotation`` (rot_y, ...) at constant
    speed, the camera centre fixed."""
    return np.stack([make_pose(rotation(np.radians(degrees_per_frame * k)), np.zeros(3))
                     for k in range(frames)])


def test_a_pan_moves_the_centre_by_the_focal_length_times_the_tangent():
    intrinsics = np.tile([0.8, 0.8, 0.5, 0.5], (9, 1))  # fx = 0.8 * 32 = 25.6 px
    motion = camera_readout.grid_motion(rotation_poses(rot_y, 2.0, 9), intrinsics, stride=4,
                                        frames=3, height=32, width=32)  # [2, 9, 2]
    for k, angle in ((0, 8.0), (1, 16.0)):  # latent frames 1 and 2: video frames 4 and 8
        np.testing.assert_allclose(motion[k, 4], [-25.6 * np.tan(np.radians(angle)), 0.0],
                                   atol=1e-4)  # a turn right (about +y) moves the image left


def test_a_roll_keeps_the_centre_and_turns_the_corners():
    intrinsics = np.tile([0.8, 0.8, 0.5, 0.5], (5, 1))
    motion = camera_readout.grid_motion(rotation_poses(rot_z, 5.0, 5), intrinsics, stride=4,
                                        frames=2, height=32, width=32)  # [1, 9, 2]
    np.testing.assert_allclose(motion[0, 4], [0.0, 0.0], atol=1e-4)
    corner = np.array([32 / 6 - 16, 32 / 6 - 16])  # the top-left point, from the centre
    a = np.radians(-20.0)  # the image turns against the camera
    turned = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ corner
    np.testing.assert_allclose(motion[0, 0], turned - corner, atol=1e-4)


def test_a_still_camera_has_no_motion_and_the_error_is_a_distance():
    intrinsics = np.tile([0.6, 0.8, 0.5, 0.5], (9, 1))
    motion = camera_readout.grid_motion(np.tile(np.eye(4), (9, 1, 1)), intrinsics, 4, 3, 32, 48)
    assert motion.shape == (2, 9, 2) and np.abs(motion).max() < 1e-9
    pred = np.zeros((1, 2, 18))
    true = np.tile([3.0, 4.0], 18 // 2)[None, None].repeat(2, 1)
    assert camera_readout.point_error(pred, true) == 5.0


def test_retiling_keeps_the_pixels():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(2, 3, 4, 4, 8 * 8 * 3)).astype(np.float32)  # 32 x 32 frames
    fine = camera_readout.retile(latents, 8, 4)
    assert fine.shape == (2, 3, 8, 8, 48)
    np.testing.assert_array_equal(camera_readout.retile(fine, 4, 8), latents)
    # the top-left 4 x 4 pixels of the first 8 x 8 cell are the first fine cell
    cell = latents[0, 0, 0, 0].reshape(8, 8, 3)
    np.testing.assert_array_equal(fine[0, 0, 0, 0].reshape(4, 4, 3), cell[:4, :4])


def test_the_cache_returns_what_was_loaded_and_loads_once(tmp_path):
    calls = []

    def load(path, limit, stride):
        calls.append(path)
        return np.full((limit, 2), stride, np.float16), np.ones((limit, 3), np.float32)

    first = camera_readout.cached(str(tmp_path), load, "/data/train", 4, 4)
    again = camera_readout.cached(str(tmp_path), load, "/data/train", 4, 4)
    other = camera_readout.cached(str(tmp_path), load, "/data/train", 5, 4)
    assert len(calls) == 2 and other[0].shape == (5, 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not list(tmp_path.glob("*.tmp*"))


def test_a_folder_without_records_is_a_one_line_error_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        camera_readout.main(["--train", str(tmp_path), "--val", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "no ArrayRecord files" in err
