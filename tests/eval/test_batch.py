"""Batch evaluation: parallel workers, per-video results, resume, the progress bar; and the
report's bookkeeping (assumed intrinsics, Dynamic Degree over every video, identity pairs)."""
import io
import json
import os
import shutil

import numpy as np
import pytest

from camclone_jax import evaluate
from camclone_jax.data import video
from camclone_jax.eval import batch, report


class CountingEvaluator:
    """A stand-in evaluator (importable, so spawned workers can build it): the metric is the
    length of the pair's name, and each run is logged to a file named by options.save_poses."""

    def __init__(self, options):
        self.log = options.save_poses

    def run(self, pair):
        with open(self.log, "a") as f:
            f.write(pair.name + "\n")
        if pair.name.startswith("bad"):
            return None, {"name": pair.name, "stage": "generated", "reason": "broken"}, {}
        return {"name": pair.name, "RotErr": float(len(pair.name))}, None, {"generated": np.ones(3)}


def _pairs(names):
    return [report.Pair(n, f"/gen/{n}.mp4", f"/cam/{n}.txt") for n in names]


def test_workers_keep_pair_order_and_write_every_result(tmp_path):
    options = report.EvalOptions(save_poses=str(tmp_path / "log.txt"))
    pairs = _pairs(["a", "bbb", "bad1", "cc"])
    out = batch.run_pairs(pairs, options, CountingEvaluator, workers=2, results_dir=str(tmp_path / "res"))
    assert [(e or f)["name"] for e, f, _ in out] == ["a", "bbb", "bad1", "cc"]
    assert out[2][1]["reason"] == "broken"
    np.testing.assert_array_equal(out[0][2]["generated"], np.ones(3))
    assert len(os.listdir(tmp_path / "res")) == 4 + 3  # a json per pair, an npz per feature set
    assert sorted(open(tmp_path / "log.txt").read().split()) == ["a", "bad1", "bbb", "cc"]


def test_resume_reuses_results_with_the_same_options(tmp_path):
    log, res = str(tmp_path / "log.txt"), str(tmp_path / "res")
    options = report.EvalOptions(save_poses=log)
    first = batch.run_pairs(_pairs(["a", "bad1"]), options, CountingEvaluator, results_dir=res)
    os.remove(log)
    assert batch.Progress(3, resumed=2, stream=io.StringIO()).time_left() is None
    again = batch.run_pairs(_pairs(["a", "bad1", "new"]), options, CountingEvaluator,
                            results_dir=res, resume=True)
    assert open(log).read().split() == ["new"]  # only the new pair was computed
    assert again[0][0] == first[0][0] and again[1][1] == first[1][1]
    np.testing.assert_array_equal(again[0][2]["generated"], first[0][2]["generated"])
    changed = report.EvalOptions(save_poses=log, degrees=True)  # other options: recomputed
    batch.run_pairs(_pairs(["a"]), changed, CountingEvaluator, results_dir=res, resume=True)
    assert open(log).read().split() == ["new", "a"]
    with pytest.raises(ValueError, match="resume needs a results folder"):
        batch.run_pairs(_pairs(["a"]), options, CountingEvaluator, resume=True)


def test_progress_bar_shows_counts_and_time_left():
    stream = io.StringIO()
    bar = batch.Progress(4, resumed=1, stream=stream)
    bar.update("x", None)
    bar.update("y", {"stage": "generated", "reason": "too dark"})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[" + "#" * 12 + "." * 12 + "] 2/4 (1 resumed), 0 failed")
    assert "left | x: ok" in lines[0]
    assert "3/4 (1 resumed), 1 failed" in lines[1] and "y: FAILED (generated): too dark" in lines[1]
    assert bar.time_left() is not None and bar.time_left() >= 0


@pytest.fixture(scope="module")
def tiny_folders(clips, tmp_path_factory):
    """generated/: a 6-frame orbit, a byte-identical copy of its camera reference, a flat grey
    video; camera_refs/: videos (no pose files, so intrinsics are assumed) of the same names."""
    root = tmp_path_factory.mktemp("batch")
    gen, cam = root / "generated", root / "camera_refs"
    gen.mkdir()
    cam.mkdir()
    frames = clips["orbit"][0][:6]
    video.write_mp4(str(cam / "orbit.mp4"), frames, 15.0)
    video.write_mp4(str(gen / "orbit.mp4"), clips["truck"][0][:6], 15.0)
    shutil.copy(cam / "orbit.mp4", cam / "same.mp4")
    shutil.copy(cam / "orbit.mp4", gen / "same.mp4")
    video.write_mp4(str(gen / "flat.mp4"), np.full_like(frames, 120), 15.0)
    video.write_mp4(str(cam / "flat.mp4"), frames, 15.0)
    return str(gen), str(cam)


def test_cli_workers_resume_and_report_bookkeeping(tiny_folders, tmp_path, capsys):
    gen, cam = tiny_folders
    out = str(tmp_path / "report.json")
    argv = ["--generated", gen, "--camera_refs", cam, "--out", out, "--no_fvd",
            "--no_matched_pixels", "--poses", "colmap", "--workers", "2"]
    result = evaluate.main(argv)
    err = capsys.readouterr().err
    assert "3/3" in err and "left |" in err
    per = {e["name"]: e for e in result["per_video"]}
    # a byte-identical copy of the reference: exactly the reference's poses (acos rounding
    # leaves ~1e-8 rad per frame)
    assert per["same"]["RotErr"] < 1e-6 and per["same"]["TransErr"] == 0.0
    # nothing told the estimator the intrinsics: both videos say they were assumed
    assert per["orbit"]["generated_poses"]["assumed_intrinsics"] is True
    assert per["orbit"]["camera_ref_poses"]["assumed_intrinsics"] is True
    # the flat video fails its poses but counts in Dyn. Deg. (not dynamic): 3 videos measured
    (flat,) = result["failed"]  # COLMAP relates no two frames of it: reported, not dropped
    assert flat["name"] == "flat" and "COLMAP (global mapper) built no model" in flat["reason"]
    assert flat["dynamic"] is False
    assert per["orbit"]["generated_poses"]["mode"] == "colmap-global"
    assert "COLMAP 4.2.1 (global mapper)" in result["settings"]["poses"]
    dyn = [per["orbit"]["dynamic"], per["same"]["dynamic"], False]
    assert result["summary"]["DynDeg"] == pytest.approx(100 * np.mean(dyn))
    assert sorted(os.listdir(tmp_path / "report.videos"))[0].startswith("flat-")
    # a rerun with --resume computes nothing and gives the same report
    again = evaluate.main(argv[:-2] + ["--resume", "--quiet"])
    assert again["summary"] == result["summary"] and again["failed"] == result["failed"]
    with open(out) as f:
        assert json.load(f)["summary"] == result["summary"]


def test_given_intrinsics_are_not_reported_as_assumed(tiny_folders):
    gen, cam = tiny_folders
    pairs = [p for p in report.make_pairs(gen, cam) if p.name == "orbit"]
    options = report.EvalOptions(fvd=False, matched_pixels=False, dynamic_degree=False,
                                 intrinsics=(0.8, 1.4, 0.5, 0.5))
    (entry,) = report.evaluate(pairs, options)["per_video"]
    assert entry["generated_poses"]["assumed_intrinsics"] is False
    assert entry["camera_ref_poses"]["assumed_intrinsics"] is False


def test_cli_errors_exit_with_status_2(tiny_folders, tmp_path, capsys):
    gen, cam = tiny_folders
    for extra, message in ((["--workers", "0"], "--workers must be >= 1"),
                           (["--poses", "magic"], "invalid choice")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--generated", gen, "--camera_refs", cam, "--out", str(tmp_path / "r.json")]
                          + extra)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err

