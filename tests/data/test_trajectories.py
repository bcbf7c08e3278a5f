"""Tests of the trajectory rules and the pose convention (no rendering)."""
import json
import math

import numpy as np
import pytest

from camclone_jax.data.synthetic import dataset as ds
from camclone_jax.data.synthetic import trajectories as T

START = {"radius": 4.5, "azimuth_deg": 30.0, "pitch_deg": 20.0, "target": [0.0, -1.0, 0.0]}


def _traj(name, frames=9, **params):
    return T.build_trajectory(name, dict(start=START, focal_mm=35.0, **params), frames, 112 / 64)


def test_same_trajectory_at_two_locations_has_identical_relative_poses():
    plan = ds.plan_group(group=2, seed=5, num_frames=9, height=64, width=112, fps=15)
    poses = [ds.world_poses(plan, loc) for loc in range(ds.NUM_LOCATIONS)]  # 4 x [10, F, 4, 4]
    assert not np.allclose(poses[0][:, 0], poses[1][:, 0], atol=1e-2)  # different places
    for k in range(ds.NUM_TRAJECTORIES):
        ref = T.relative_to_first(poses[0][k])
        for loc in range(1, ds.NUM_LOCATIONS):
            np.testing.assert_allclose(T.relative_to_first(poses[loc][k]), ref, atol=2e-5)


def test_pan_right_rotates_about_the_camera_up_axis_towards_plus_x():
    rel = T.relative_to_first(_traj("pan", angle_deg=30.0).c2w)[-1]  # [4, 4]
    a = math.radians(30.0)
    np.testing.assert_allclose(rel[:3, 1], [0.0, 1.0, 0.0], atol=1e-6)  # the axis: camera y (down)
    np.testing.assert_allclose(rel[:3, 2], [math.sin(a), 0.0, math.cos(a)], atol=1e-6)  # +z -> +x
    np.testing.assert_allclose(rel[:3, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(rel[:3, :3], T.rot_y(a), atol=1e-6)
    # pan left is the opposite turn; tilt up turns +z towards -y (up); roll turns +x towards +y
    np.testing.assert_allclose(T.relative_to_first(_traj("pan", angle_deg=-30.0).c2w)[-1][:3, 2],
                               [-math.sin(a), 0.0, math.cos(a)], atol=1e-6)
    assert T.relative_to_first(_traj("tilt", angle_deg=20.0).c2w)[-1][1, 2] < -0.3
    assert T.relative_to_first(_traj("roll", angle_deg=20.0).c2w)[-1][1, 0] > 0.3


def test_translations_move_along_the_documented_camera_axes():
    for name, axis in (("truck", [1, 0, 0]), ("pedestal", [0, -1, 0]), ("dolly", [0, 0, 1])):
        rel = T.relative_to_first(_traj(name, distance_m=1.5).c2w)[-1]
        np.testing.assert_allclose(rel[:3, 3], 1.5 * np.array(axis), atol=1e-5)
        np.testing.assert_allclose(rel[:3, :3], np.eye(3), atol=1e-6)


def test_start_pose_looks_at_the_target_with_a_level_horizon():
    c2w = T.start_pose(START)
    forward = np.array(START["target"]) - c2w[:3, 3]
    np.testing.assert_allclose(c2w[:3, 2], forward / np.linalg.norm(forward), atol=1e-12)
    assert abs(c2w[1, 0]) < 1e-12  # camera x stays horizontal: no roll
    assert c2w[1, 2] > 0  # pitch 20 deg looks down (+y is down)
    np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)


def test_realestate10k_round_trip_is_exact():
    """c2w -> rows -> c2w and rows -> c2w -> rows agree to float64 rounding (1e-12, far below the
    float32 poses' resolution); ids, intrinsics and the text form round-trip bit for bit."""
    rng = np.random.default_rng(0)
    traj = T.sample_trajectory(rng, 17, 1.75)
    stamps = np.arange(17) * 66667
    rows = T.to_realestate10k(traj.c2w, traj.intrinsics, stamps)  # [F, 19]
    assert rows.shape == (17, 19) and np.all(rows[:, 5:7] == 0)
    np.testing.assert_allclose(rows[:, 7:].reshape(17, 3, 4), T.invert_pose(traj.c2w)[:, :3], atol=1e-6)
    ts, intr, back = T.from_realestate10k(rows)
    np.testing.assert_array_equal(ts, stamps)
    np.testing.assert_array_equal(intr, traj.intrinsics.astype(np.float64))
    np.testing.assert_allclose(back, traj.c2w.astype(np.float64), rtol=0, atol=1e-12)
    np.testing.assert_allclose(T.to_realestate10k(back, intr, ts), rows, rtol=0, atol=1e-12)
    header, parsed = T.parse_realestate10k(T.format_realestate10k("videos/x.mp4", rows))
    assert header == "videos/x.mp4"
    np.testing.assert_array_equal(parsed, rows)  # the text form is bit exact


def test_realestate10k_rejects_malformed_input():
    with pytest.raises(ValueError, match="19"):
        T.from_realestate10k(np.zeros((3, 18)))
    with pytest.raises(ValueError, match="c2w"):
        T.to_realestate10k(np.zeros((3, 3, 4)), np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="19 numbers"):
        T.parse_realestate10k("header\n0 1 2 3\n")
    with pytest.raises(ValueError, match="malformed"):
        T.parse_realestate10k("header\n" + " ".join(["x"] * 19))


def test_ease_profile_follows_the_paper_formula():
    a, f = 3.0, 16
    s = T.speed_profile(f + 1, a)
    i = np.arange(f + 1)
    np.testing.assert_allclose(s, (1 - np.exp(-a * i / f)) / (1 - np.exp(-a)), rtol=1e-12)
    assert s[0] == 0 and abs(s[-1] - 1) < 1e-12 and np.all(np.diff(s) > 0)
    assert np.all(np.diff(s, 2) < 0)  # a > 0 decelerates
    np.testing.assert_allclose(T.speed_profile(5), [0, 0.25, 0.5, 0.75, 1.0])


def test_sampled_trajectories_follow_the_rules_and_rebuild_from_name_and_params():
    rng = np.random.default_rng(1)
    config = T.TrajectoryConfig()
    names = set()
    for _ in range(60):
        traj = T.sample_trajectory(rng, 9, 1.75, config)
        names.add(traj.name)
        p = traj.params
        assert T.check_trajectory(traj.c2w, config) == ""
        assert p["focal_mm"] in (18.0, 24.0, 35.0, 50.0)
        if traj.name in ("pan", "tilt"):
            assert 5 <= abs(p["angle_deg"]) <= 75
        elif traj.name == "roll":
            assert 20 <= abs(p["angle_deg"]) <= 340
        elif traj.name == "orbit":
            assert 10 <= abs(p["angle_deg"]) <= 75 and 5 <= abs(p["elevation_deg"]) <= 15
        elif traj.name == "spline":
            assert 2 <= len(p["keypoints"]) <= 4
        travel = np.linalg.norm(traj.c2w[:, :3, 3] - traj.c2w[:1, :3, 3], axis=1).max()
        assert travel <= config.max_travel + 1e-5
        rebuilt = T.build_trajectory(traj.name, json.loads(json.dumps(p)), 9, 1.75)
        np.testing.assert_array_equal(rebuilt.c2w, traj.c2w)
        assert traj.describe().startswith("The camera ")
    assert {"pan", "orbit", "spline"} <= names


def test_a_restricted_world_draws_only_its_moves_at_constant_speed():
    """configs/clone_3d.py's world: pans, tilts and rolls only, capped angles, no easing; the
    default config's draws are unchanged by the option's existence."""
    config = T.TrajectoryConfig(moves=("pan", "tilt", "roll"), angle_deg=(5.0, 40.0),
                                roll_deg=(10.0, 45.0), constant_speed=True)
    rng, names = np.random.default_rng(2), set()
    for _ in range(30):
        traj = T.sample_trajectory(rng, 9, 1.0, config)
        names.add(traj.name)
        top = 45.0 if traj.name == "roll" else 40.0
        assert traj.params["ease_a"] == 0.0 and abs(traj.params["angle_deg"]) <= top
        np.testing.assert_allclose(traj.c2w[:, :3, 3], traj.c2w[:1, :3, 3].repeat(9, 0),
                                   atol=1e-6)  # rotations about the centre: no travel
    assert names == {"pan", "tilt", "roll"}
    a = T.sample_trajectory(np.random.default_rng(5), 9, 1.75)
    b = T.sample_trajectory(np.random.default_rng(5), 9, 1.75, T.TrajectoryConfig(moves=()))
    np.testing.assert_array_equal(a.c2w, b.c2w)
    with pytest.raises(ValueError, match="unknown moves"):
        T.TrajectoryConfig(moves=("spin",))


def test_intrinsics_from_focal_length():
    intr = T.intrinsics_from_focal(36.0, 2.0)
    np.testing.assert_allclose(intr, [1.0, 2.0, 0.5, 0.5])
    k = T.intrinsics_matrix(intr, 64, 128)
    np.testing.assert_allclose(k, [[128, 0, 64], [0, 128, 32], [0, 0, 1]])  # square pixels


def test_bad_trajectory_arguments_raise():
    with pytest.raises(ValueError, match="unknown trajectory"):
        _traj("zoom")
    with pytest.raises(ValueError, match="num_frames"):
        _traj("static", frames=1)
