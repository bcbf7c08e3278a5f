"""python -m camclone_jax.reference: moves rendered into camera references whose poses
`evaluate`'s estimator reads back within its measured floor, pose files of every format, an
edit of an estimated camera, and bad inputs named in one line with exit status 2."""
import json
import re

import numpy as np
import pytest

from camclone_jax import reference
from camclone_jax.data import video
from camclone_jax.data.synthetic import moves
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera, pose_backends
from camclone_jax.inference import camera_reference
from tests.eval.test_poses import ROT_BOUND_DEG

FRAMES, HEIGHT, WIDTH = 17, 96, 160  # one shape: the ray caster compiles once
SIZE = ["--frames", FRAMES, "--height", HEIGHT, "--width", WIDTH]
MOVES = {"rotation": "pan left 20 deg, then tilt up 10 deg",
         "sfm": "dolly in 1 m, then truck right 1 m"}
FOV_24MM = 2 * np.degrees(np.arctan(18 / moves.DEFAULT_FOCAL_MM))  # the moves' default lens
TRANS_BOUND = 0.1  # mean normalised translation error of moves that translate (test_poses.py)


def run_cli(*argv):
    return reference.main([str(a) for a in argv])


def asked(text, aspect=WIDTH / HEIGHT):
    """The poses [F, 4, 4] a move asks for, relative to its first frame."""
    return traj_lib.relative_to_first(moves.parse_move(text, FRAMES, aspect).c2w)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{mode: mp4 path} of MOVES rendered by the command line."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for mode, text in MOVES.items():
        out[mode] = root / f"{mode}.mp4"
        run_cli("--move", text, "--out", out[mode], *SIZE)
    return out


@pytest.mark.parametrize("mode", ["rotation", "sfm"])
def test_round_trip_through_the_pose_estimator(rendered, mode):
    """The poses written beside the video are the asked ones, and evaluate's estimator reads
    them back from the mp4 within its stated floor (tests/eval/test_poses.py)."""
    frames, fps = video.read_video(str(rendered[mode]))
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and fps == 16
    record = camera.read_poses(str(rendered[mode].with_suffix(".json")))
    np.testing.assert_allclose(record[0], asked(MOVES[mode]), atol=1e-5)
    est = pose_backends.estimate(frames, record[1])
    assert est.mode == mode, est.summary()
    err = camera.camera_errors(est.c2w, record[0])
    assert np.degrees(err["rot"]).max() < ROT_BOUND_DEG[mode], np.degrees(err["rot"])
    assert err["trans"].mean() < (TRANS_BOUND if mode == "sfm" else 1e-9), err["trans"]


def test_edit_of_an_estimated_camera(rendered, tmp_path, capsys):
    """--from_video estimates the reference's camera; the edit mirrors it and halves its speed."""
    out = tmp_path / "edited.mp4"
    run_cli("--from_video", rendered["rotation"], "--edit", "mirrored, slower 2", "--out", out,
            *SIZE, "--scene", "outdoor", "--seed", 3, "--fov_deg", FOV_24MM)
    assert "edited: mirrored, slower 2" in capsys.readouterr().out
    c2w, _ = camera.read_poses(str(out.with_suffix(".json")))
    want = moves.apply_edits(asked(MOVES["rotation"]), moves.parse_edit("mirrored, slower 2"))
    err = camera.camera_errors(c2w, want)
    assert np.degrees(err["rot"]).max() < ROT_BOUND_DEG["rotation"], np.degrees(err["rot"])
    assert video.read_video(str(out))[0].shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_every_pose_file_format_gives_the_same_path(tmp_path):
    """RealEstate10K / CameraCtrl .txt, MegaSaM .npz and JSON (4x4 or 3x4) of one path."""
    c2w = asked(MOVES["sfm"], 4 / 3)  # [F, 4, 4]
    world = traj_lib.make_pose(traj_lib.rot_y(0.7), [3.0, -1.0, 2.0])[None] @ c2w  # any frame
    intr = traj_lib.intrinsics_from_focal(35.0, 4 / 3)  # a 4:3 file, rendered at 16:10
    rows = traj_lib.to_realestate10k(world, np.tile(intr, (FRAMES, 1)), np.arange(FRAMES))
    (tmp_path / "cam.txt").write_text(traj_lib.format_realestate10k("https://x", rows))
    k = traj_lib.intrinsics_matrix(intr, 480, 640)
    np.savez(tmp_path / "megasam.npz", cam_c2w=world, intrinsic=k)
    (tmp_path / "list.json").write_text(json.dumps(world[:, :3].tolist()))
    (tmp_path / "dict.json").write_text(json.dumps({"c2w": world.tolist(),
                                                    "intrinsics": intr.tolist()}))
    for name in ("cam.txt", "megasam.npz", "list.json", "dict.json"):
        path, got_intr = camera_reference.path_from_poses(str(tmp_path / name), FRAMES, 1.6)
        np.testing.assert_allclose(path, c2w, atol=1e-6, err_msg=name)
        fx = intr[0] if name != "list.json" else 24 / 36  # no intrinsics: the 24 mm lens
        np.testing.assert_allclose(got_intr, [fx, fx * 1.6, 0.5, 0.5], err_msg=name)


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "garbage.txt").write_text("header\n1 2 3\n")
    (tmp_path / "one.json").write_text(json.dumps([np.eye(4).tolist()]))
    (tmp_path / "broken.json").write_text("{c2w: ")
    (tmp_path / "keys.json").write_text(json.dumps({"poses": []}))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    (tmp_path / "poses.csv").write_text("1,2,3\n")
    video.write_mp4(str(tmp_path / "flat.mp4"), np.full((5, 32, 48, 3), 128, np.uint8), 16)
    return tmp_path


@pytest.mark.parametrize("args, match", [
    (["--move", "pan sideways 20 deg"], "cannot read 'sideways'"),
    (["--move", "dolly in 20 deg"], "needs a distance"),
    (["--move", "pedestal down 5 m"], "below the floor"),
    (["--move", "pan left 5 deg", "--edit", "bigger"], "edit 'bigger': cannot read 'bigger'"),
    (["--move", "pan left 5 deg", "--frames", 18], "frames must be 1 \\+ 4k"),
    (["--poses", "{d}/garbage.txt"], "garbage.txt: RealEstate10K rows must have 19 numbers"),
    (["--poses", "{d}/one.json"], "one.json: a camera path needs at least 2 poses"),
    (["--poses", "{d}/broken.json"], "broken.json: invalid JSON"),
    (["--poses", "{d}/keys.json"], "keys.json: no 'c2w'"),
    (["--poses", "{d}/other.npz"], "other.npz: no 'cam_c2w'"),
    (["--poses", "{d}/missing.txt"], "pose file not found: .*missing.txt"),
    (["--poses", "{d}/poses.csv"], "unknown pose file type '.csv'"),
    (["--from_video", "{d}/flat.mp4"], "flat.mp4: cannot estimate its camera"),
])
def test_bad_inputs_exit_2_with_one_line(bad_inputs, args, match, capsys):
    out = bad_inputs / "out.mp4"
    with pytest.raises(SystemExit) as e:
        run_cli("--out", out, "--frames", 5, "--height", 32, "--width", 48,
                *[str(a).format(d=bad_inputs) for a in args])  # the last --frames counts
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(match, err), err
    assert not out.exists() and not out.with_suffix(".json").exists()
