"""The evaluation command line and library on a few tiny videos: pairing, report, failures.
These run our estimator (`--poses ours`, the default), whose modes they check; test_batch.py runs COLMAP."""
import json
import os

import numpy as np
import pytest

from camclone_jax import evaluate
from camclone_jax.data import video
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import report


def _pose_file(path, c2w, intr):
    rows = traj_lib.to_realestate10k(c2w, intr, np.arange(len(c2w)) * 66666)
    with open(path, "w") as f:
        f.write(traj_lib.format_realestate10k("clip", rows))


@pytest.fixture(scope="module")
def folders(clips, tmp_path_factory):
    """generated/ {pan, dolly: fine; flat: textureless; corrupt: not a video}, camera_refs/ with
    ground-truth RealEstate10K pose files, content_refs/ with other moves of the location."""
    root = tmp_path_factory.mktemp("cli")
    gen, cam, con = (root / d for d in ("generated", "camera_refs", "content_refs"))
    for d in (gen, cam, con):
        d.mkdir()
    for name, content in (("pan", "tilt"), ("dolly", "truck"), ("flat", "static")):
        frames = clips[name if name != "flat" else "pan"][0]
        if name == "flat":
            frames = np.full_like(frames, 120)
        video.write_mp4(str(gen / f"{name}.mp4"), frames, 15.0)
        _, c2w, intr = clips[name if name != "flat" else "pan"]
        _pose_file(cam / f"{name}.txt", c2w, intr)
        video.write_mp4(str(con / f"{name}.mp4"), clips[content][0], 15.0)
    (gen / "corrupt.mp4").write_bytes(b"this is not an mp4 file")
    _pose_file(cam / "corrupt.txt", *clips["pan"][1:])
    video.write_mp4(str(con / "corrupt.mp4"), clips["static"][0], 15.0)
    return str(gen), str(cam), str(con)


def test_cli_writes_report_and_lists_failures(folders, tmp_path, capsys):
    gen, cam, con = folders
    out = str(tmp_path / "report.json")
    result = evaluate.main(["--generated", gen, "--camera_refs", cam, "--content_refs", con,
                            "--out", out, "--no_fvd", "--name", "tiny", "--quiet", "--poses", "ours"])
    printed = capsys.readouterr().out
    with open(out) as f:
        saved = json.load(f)
    assert saved["num_pairs"] == 4 and saved["num_evaluated"] == 2 and saved["num_failed"] == 2
    failed = {f["name"]: f for f in saved["failed"]}
    assert set(failed) == {"flat", "corrupt"}
    assert failed["flat"]["stage"] == "generated" and "too few trackable" in failed["flat"]["reason"]
    assert "cannot decode" in failed["corrupt"]["reason"]
    # Dyn. Deg. counts the flat video whose poses failed; the corrupt one cannot be measured
    assert failed["flat"]["dynamic"] is False and "dynamic" not in failed["corrupt"]
    assert any("Dyn. Deg. over 3 of 4 videos" in n for n in saved["notes"])
    per = {e["name"]: e for e in saved["per_video"]}
    assert per["pan"]["RotErr"] < 0.1 and per["dolly"]["RotErr"] < 0.3  # radians, summed
    assert per["pan"]["generated_poses"]["mode"] == "rotation"
    assert per["dolly"]["generated_poses"]["mode"] == "sfm"
    assert per["pan"]["MatPix"] > 0
    mean_rot = np.mean([per["pan"]["RotErr"], per["dolly"]["RotErr"]])
    assert saved["summary"]["RotErr"] == pytest.approx(mean_rot)
    assert result["summary"] == saved["summary"]
    assert "| tiny |" in printed and "RotErr ↓" in printed and "| 2/4 |" in printed
    assert "flat (generated)" in printed
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # written atomically


def test_library_with_fvd_and_csv_pairing(folders, clips, tmp_path):
    _, cam, con = folders
    gen = tmp_path / "generated"
    gen.mkdir()
    for name in ("pan", "tilt"):
        video.write_mp4(str(gen / f"{name}.mp4"), clips[name][0], 15.0)
    _pose_file(tmp_path / "tilt.txt", *clips["tilt"][1:])
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("generated,camera_ref,content_ref\n"
                        f"pan.mp4,{cam}/pan.txt,{con}/pan.mp4\n"
                        f"tilt.mp4,tilt.txt,{con}/dolly.mp4\n")  # relative to the CSV
    pairs = report.make_pairs(str(gen), str(csv_path))
    assert [p.name for p in pairs] == ["pan", "tilt"]
    options = report.EvalOptions(i3d_endpoint="pool", i3d_size=32, i3d_frames=8, degrees=True,
                                 reduction="mean", pose_backend="ours",
                                 save_poses=str(tmp_path / "poses"))
    result = report.evaluate(pairs, options, name="csv")
    assert result["num_failed"] == 0
    assert result["summary"]["FVD-V"] > 0 and "FVD" not in result["summary"]
    assert result["summary"]["RotErr"] < 1.0  # degrees per frame
    assert sorted(os.listdir(tmp_path / "poses")) == ["pan.npz", "tilt.npz"]
    table = report.markdown_table([result])
    assert "FVD-V ↓" in table and "| csv |" in table


def test_pairing_errors_name_the_problem(folders, tmp_path, capsys):
    gen, cam, con = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"reference of the same name: \['corrupt', 'dolly'"):
        report.make_pairs(gen, str(empty))
    with pytest.raises(FileNotFoundError, match="camera reference folder not found"):
        report.make_pairs(gen, str(tmp_path / "nowhere"))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("generated,camera_ref\npan.mp4,missing.txt\n")
    with pytest.raises(FileNotFoundError, match="bad.csv:2: camera reference not found"):
        report.make_pairs(gen, str(bad_csv))
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--generated", str(empty), "--camera_refs", cam, "--out", str(tmp_path / "r.json")])
    assert exit_info.value.code == 2 and "no videos" in capsys.readouterr().err


def test_frame_count_mismatch_fails_clearly_or_resamples(folders, clips, tmp_path):
    gen, _, _ = folders
    cam = tmp_path / "short_refs"
    cam.mkdir()
    _, c2w, intr = clips["pan"]
    _pose_file(cam / "pan.txt", c2w[::2], intr[::2])
    pair = [report.Pair("pan", os.path.join(gen, "pan.mp4"), str(cam / "pan.txt"))]
    options = report.EvalOptions(fvd=False, pose_backend="ours")
    result = report.evaluate(pair, options)
    assert result["num_failed"] == 1 and "frame counts differ" in result["failed"][0]["reason"]
    result = report.evaluate(pair, report.EvalOptions(fvd=False, resample=True, pose_backend="ours"))
    assert result["num_failed"] == 0 and result["per_video"][0]["resampled_reference"]
