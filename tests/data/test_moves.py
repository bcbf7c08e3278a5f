"""Camera moves in words (data/synthetic/moves.py): the dataset's captions parse back into their
trajectories, words compose one after another and at once, edits of a path, clear errors."""
import math

import numpy as np
import pytest

from camclone_jax.data.synthetic import moves
from camclone_jax.data.synthetic import trajectories as traj_lib

F, ASPECT = 17, 16 / 9


def rel(c2w):
    return traj_lib.relative_to_first(c2w)  # [F, 4, 4]


def pose(rotation=np.eye(3), translation=(0.0, 0.0, 0.0)):
    return traj_lib.make_pose(rotation, translation)


def test_captions_of_the_dataset_parse_back():
    """Every caption the generator writes (but a spline's) reads back as its move, to the
    caption's rounding: angles to 0.5 deg, distances to 5 cm, the lens, the ease's direction."""
    rng, checked = np.random.default_rng(0), 0
    while checked < 40:
        traj = traj_lib.sample_trajectory(rng, F, ASPECT)
        if traj.name == "spline":
            continue
        [(name, got)], = moves.parse_shot_list(traj.describe())
        want = traj.params
        assert name == traj.name, traj.describe()
        for key, tol in (("angle_deg", 0.5), ("distance_m", 0.05), ("elevation_deg", 0.5)):
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=tol), traj.describe()
        assert got["focal_mm"] == want["focal_mm"]
        assert np.sign(got["ease_a"]) == np.sign(want.get("ease_a", 0.0))
        checked += 1


def test_a_word_move_is_the_trajectory_of_the_vocabulary():
    move = moves.parse_move("pan left 20 deg easing out with a 35 mm lens", F, ASPECT)
    want = traj_lib.build_trajectory("pan", {"start": moves.REFERENCE_START, "angle_deg": -20.0,
                                             "focal_mm": 35.0, "ease_a": moves.DEFAULT_EASE},
                                     F, ASPECT)
    np.testing.assert_allclose(move.c2w, want.c2w, atol=1e-6)
    np.testing.assert_allclose(move.intrinsics, want.intrinsics)
    assert move.describe() == ("The camera pans left 20 deg easing out, with a 35 mm lens.")


@pytest.mark.parametrize("text, last", [
    ("dolly in 1 m, then pan left 20 deg", pose(traj_lib.rot_y(math.radians(-20)), (0, 0, 1))),
    ("dolly in 1 m and pan left 20 deg", pose(traj_lib.rot_y(math.radians(-20)), (0, 0, 1))),
    ("pan left 20 deg, then dolly in 1 m",
     pose(traj_lib.rot_y(math.radians(-20)), traj_lib.rot_y(math.radians(-20)) @ [0, 0, 1])),
    ("truck right 50 cm; pedestal up 0.5 m. hold", pose(translation=(0.5, -0.5, 0))),
    ("roll clockwise 0.5 rad", pose(traj_lib.rot_z(0.5))),
    ("The camera tilts down 10°, at constant speed.", pose(traj_lib.rot_x(math.radians(-10)))),
])
def test_words_compose_one_after_another_and_at_once(text, last):
    move = moves.parse_move(text, F, ASPECT)
    np.testing.assert_allclose(rel(move.c2w)[-1], last, atol=1e-5)
    again = moves.parse_move(move.describe(), F, ASPECT)  # the description reads back, to its
    np.testing.assert_allclose(again.c2w, move.c2w, atol=1e-2)  # rounding (whole degrees)


def test_clauses_share_the_frames_evenly():
    move = moves.parse_move("dolly in 1 m, then truck right 1 m", F, ASPECT)
    path = rel(move.c2w)[:, :3, 3]  # [F, 3]
    np.testing.assert_allclose(path[8], [0, 0, 1], atol=1e-6)  # 16 steps: 8 and 8
    np.testing.assert_allclose(path[4], [0, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(path[-1], [1, 0, 1], atol=1e-6)


@pytest.mark.parametrize("text, match", [
    ("pan sideways 20 deg", "cannot read 'sideways'.*pan goes right or left"),
    ("dolly in 20 deg", "needs a distance"),
    ("pan left", "has no amount"),
    ("zoom in 2 m", "no move in 'zoom in 2 m'"),
    ("pan left 20 deg 30 deg", "two amounts"),
    ("easing out, pan left 3 deg", "comes before any move"),
    ("pan left 20 deg with a 35 mm lens, tilt up 5 deg with a 50 mm lens", "two different lenses"),
    ("", "empty move"),
])
def test_bad_moves_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        moves.parse_move(text, F, ASPECT)


def test_too_many_clauses_for_the_frames():
    with pytest.raises(ValueError, match="need at least 4 frames, got 3"):
        moves.parse_move("pan left 5 deg, hold, tilt up 5 deg", 3, ASPECT)


# ----------------------------------------------------------------------------- edits
def edited(text, edit):
    return moves.apply_edits(moves.parse_move(text, F, ASPECT).c2w, moves.parse_edit(edit))


def test_edits():
    pan = lambda deg: pose(traj_lib.rot_y(math.radians(deg)))  # noqa: E731
    np.testing.assert_allclose(edited("pan right 20 deg", "mirrored")[-1], pan(-20), atol=1e-6)
    np.testing.assert_allclose(edited("pan right 20 deg", "slower")[-1], pan(10), atol=1e-6)
    np.testing.assert_allclose(edited("pan right 20 deg", "slower 4")[8], pan(2.5), atol=1e-6)
    np.testing.assert_allclose(edited("pan right 20 deg", "faster 2")[-1], pan(40), atol=1e-6)
    np.testing.assert_allclose(edited("dolly in 1 m", "faster 3")[-1, :3, 3], [0, 0, 3], atol=1e-6)
    np.testing.assert_allclose(edited("dolly in 1 m", "scaled 0.5")[-1, :3, 3], [0, 0, 0.5],
                               atol=1e-6)
    np.testing.assert_allclose(edited("truck right 1 m", "mirrored")[-1, :3, 3], [-1, 0, 0],
                               atol=1e-6)
    np.testing.assert_allclose(edited("tilt up 10 deg", "mirrored")[-1],
                               pose(traj_lib.rot_x(math.radians(10))), atol=1e-6)
    back = edited("pan right 20 deg, then dolly in 1 m", "reversed")  # dolly out, then pan left
    np.testing.assert_allclose(back[8, :3, 3], [0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(back[-1], traj_lib.invert_pose(
        rel(moves.parse_move("pan right 20 deg, then dolly in 1 m", F, ASPECT).c2w)[-1]), atol=1e-6)
    assert moves.parse_edit("Reverse and slower 3x, scaled 0.5") == [
        ("reversed", 2.0), ("slower", 3.0), ("scaled", 0.5)]


@pytest.mark.parametrize("text, match", [
    ("bigger", "cannot read 'bigger'"), ("scaled", "needs a factor"),
    ("reversed 2", "takes no factor"), ("slower 0", "must be positive"), (" , ", "no edit"),
])
def test_bad_edits_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        moves.parse_edit(text)
