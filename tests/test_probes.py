"""The reference-reading probes (benchmarks/shift_probe.py, clone_probe.py, copy_probe.py,
probe_table.py) at a
tiny size: the shift task's data is what it says, a one-step run reports both reference-use
gaps, and the log table has a row per step. Compiling the DiT's training step dominates the
time (about 15 s of CPU for the file)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import clone_probe  # noqa: E402
import copy_probe  # noqa: E402
import probe_table  # noqa: E402
import shift_probe  # noqa: E402

TINY = ["--steps", "1", "--log_every", "1", "--batch", "2", "--probe_batch", "2",
        "--frames", "2", "--height", "4", "--width", "4", "--patch", "2", "--dim", "32",
        "--head_dim", "16", "--layers", "1"]


def test_shift_batch_moves_content_as_the_camera_reference():
    _, with_velocity, content_only = shift_probe.make_task(s2d=2, max_speed=1.5, blur=1.0)
    shape = (3, 4, 4, 6, 12)
    target, cam, content, vel = with_velocity(jax.random.key(1), shape)
    assert target.shape == cam.shape == content.shape == shape and vel.shape == (3, 2)
    np.testing.assert_array_equal(content[:, 1:], jnp.broadcast_to(content[:, :1], (3, 3, 4, 6, 12)))
    np.testing.assert_allclose(target[:, 0], content[:, 0])
    assert float(jnp.abs(target[:, 1] - target[:, 0]).mean()) > 0.05  # it moves
    floor = content_only(jax.random.key(1), shape)  # the best guess without the camera
    np.testing.assert_allclose(floor[:, 0], target[:, 0], atol=1e-5)
    assert 0 < float(jnp.mean((floor - target) ** 2)) < float(jnp.mean((content - target) ** 2))


def test_shift_probe_reports_both_gaps(tmp_path):
    out = tmp_path / "shift.jsonl"
    records = shift_probe.main(TINY + ["--channels", "12", "--s2d", "2", "--out", str(out)])
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        assert set(r["gap"]) == {"no_camera", "no_content"}
        assert set(r["err"]) == {"with_refs", "no_camera", "no_content"}
        assert all(np.isfinite(v) for v in r["err"].values())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header = lines[0]["header"]
    assert header["tokens_per_segment"] == 8 and header["heads"] == 2
    assert 0 < header["no_camera_floor"] <= header["copy_content_err"]
    assert lines[1:] == json.loads(json.dumps(records))


def test_copy_probe_batch_is_its_own_content_reference():
    target, cam, content = copy_probe.make_batch(jax.random.key(0), (2, 2, 4, 4, 8))
    assert target.shape == (2, 2, 4, 4, 8) and not cam.any()
    np.testing.assert_array_equal(target, content)


def test_probe_table_has_a_row_per_logged_step(tmp_path):
    log = tmp_path / "run.jsonl"
    recs = [{"header": {"task": "shift"}}] + [
        {"step": s, "err": {"with_refs": 0.5, "no_camera": 0.6}, "gap": {"no_camera": 0.1}}
        for s in (0, 250, 500)]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = probe_table.table([str(log)], every=250).splitlines()
    assert len(rows) == 5 and rows[-1] == "| 500 | 0.500 | 0.100 |"


def test_wallpaper_frames_roll_by_the_velocity_and_the_floor_is_exact():
    make_batch, no_camera_best = clone_probe.make_task(max_speed=1)
    target, cam, content = make_batch(jax.random.key(2), (4, 3, 5, 6, 3))
    assert not content.any()
    t, c = np.asarray(target), np.asarray(cam)
    for i in range(4):  # camera reference and target move by the same whole cells each frame
        moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if np.array_equal(np.roll(c[i, 0], (dy, dx), (0, 1)), c[i, 1])]
        assert len(moves) == 1
        for k in range(3):
            np.testing.assert_array_equal(np.roll(t[i, 0], (k * moves[0][0], k * moves[0][1]),
                                                  (0, 1)), t[i, k])
    best = np.asarray(no_camera_best(target))  # the mean over the 9 velocities' shifts
    np.testing.assert_allclose(best[:, 0], t[:, 0], atol=1e-6)
    manual = np.mean([np.roll(t[:, 0], (dy, dx), (1, 2)) for dy in (-1, 0, 1)
                      for dx in (-1, 0, 1)], axis=0)
    np.testing.assert_allclose(best[:, 1], manual, atol=1e-5)


def test_clone_probe_reports_the_camera_gap_in_i2v(tmp_path):
    out = tmp_path / "clone.jsonl"
    records = clone_probe.main(TINY + ["--patch", "1", "--channels", "4", "--probe_batch", "16",
                                      "--out", str(out)])
    assert [r["step"] for r in records] == [0, 1]
    assert all(set(r["gap"]) == {"no_camera"} and np.isfinite(r["gap"]["no_camera"])
               for r in records)
    header = json.loads(out.read_text().splitlines()[0])["header"]
    assert header["task"] == "wallpaper_clone" and header["args"]["i2v"]
    assert 0 < header["no_camera_floor"] < header["copy_first_frame_err"]
