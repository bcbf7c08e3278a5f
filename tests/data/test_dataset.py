"""Tests of the dataset structure, the record schema, video files and the generator CLI."""
import csv
import json
import os

import msgpack
import numpy as np
import pytest

from camclone_jax.data import records, video
from camclone_jax.data.synthetic import __main__ as cli
from camclone_jax.data.synthetic import dataset as ds
from camclone_jax.data.synthetic import trajectories as T
from camclone_jax.data.synthetic import writer

ARGS = ["--num_groups", "1", "--frames", "9", "--height", "32", "--width", "56", "--seed", "3",
        "--quiet"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic") / "ds")
    meta = cli.main(["--out", out] + ARGS)
    assert meta["complete"]
    return out


def _ids(v):
    return {k: v[k] for k in ("group_id", "location_id", "trajectory_id")}


# ----------------------------------------------------------------------------- triplet rule
def test_every_triplet_obeys_the_rule():
    for n in (1, 3, ds.MAX_TRIPLETS_PER_TARGET):
        for group in (0, 7):
            trips = ds.group_triplets(group, n, seed=1)
            assert len(trips) == ds.NUM_LOCATIONS * ds.NUM_TRAJECTORIES * n
            assert len(set(trips)) == len(trips)  # no duplicates
            for t in trips:
                tgt, cam, con = t.target, t.camera_ref, t.content_ref
                assert ds.triplet_rule_violation(tgt.ids(), cam.ids(), con.ids()) == ""
                assert cam.trajectory == tgt.trajectory and cam.location != tgt.location
                assert con.location == tgt.location and con.trajectory != tgt.trajectory
                assert cam != tgt and con != tgt
    # three triplets per target use the three other locations as camera references
    trips = ds.group_triplets(0, 3, seed=1)
    for i in range(0, len(trips), 3):
        assert len({t.camera_ref.location for t in trips[i:i + 3]}) == 3
        assert len({t.content_ref.trajectory for t in trips[i:i + 3]}) == 3


def test_rule_violations_are_detected():
    t, other_loc, other_traj = ds.VideoKey(0, 1, 2), ds.VideoKey(0, 3, 2), ds.VideoKey(0, 1, 5)
    ok = ds.triplet_rule_violation
    assert ok(t.ids(), other_loc.ids(), other_traj.ids()) == ""
    assert "camera reference" in ok(t.ids(), t.ids(), other_traj.ids())  # the target itself
    assert "content reference" in ok(t.ids(), other_loc.ids(), t.ids())
    assert "trajectory" in ok(t.ids(), ds.VideoKey(0, 3, 4).ids(), other_traj.ids())
    assert "group" in ok(t.ids(), ds.VideoKey(1, 3, 2).ids(), other_traj.ids())
    with pytest.raises(ValueError, match="triplets_per_target"):
        ds.group_triplets(0, 28, seed=0)


# ----------------------------------------------------------------------------- the CLI output
def test_cli_writes_records_that_decode_and_obey_the_rule(dataset_dir):
    meta = json.load(open(os.path.join(dataset_dir, "metadata.json")))
    assert meta["counts"] == {"groups": 1, "locations": 4, "trajectories": 10, "videos": 40,
                              "triplets": 120, "shards": 1}
    path = os.path.join(dataset_dir, "records", "triplets-00000-of-00001.array_record")
    recs = [records.decode_triplet(b) for b in records.read_records(path)]
    assert len(recs) == records.num_records(path) == 120
    targets = set()
    for r in recs:
        assert r["kind"] == "mp4" and (r["num_frames"], r["height"], r["width"]) == (9, 32, 56)
        tgt, cam, con = r["target"], r["camera_ref"], r["content_ref"]
        assert ds.triplet_rule_violation(_ids(tgt), _ids(cam), _ids(con)) == ""
        # ground truth: the camera reference moves exactly like the target (relative to its start)
        np.testing.assert_allclose(T.relative_to_first(cam["poses"]), T.relative_to_first(tgt["poses"]),
                                   atol=1e-4)
        np.testing.assert_array_equal(cam["intrinsics"], tgt["intrinsics"])
        assert con["caption"] == tgt["caption"] == r["caption"]  # same location, same scene
        assert not np.allclose(con["poses"], tgt["poses"])
        targets.add(tgt["video_id"])
    assert len(targets) == 40
    r = recs[0]
    first = video.decode_png(r["first_frame"])
    frames, fps = video.read_video(os.path.join(dataset_dir, r["target"]["path"]))
    assert first.shape == (32, 56, 3) and fps == 15.0
    assert np.abs(first.astype(int) - frames[0]).mean() < 12  # PNG is lossless; mp4 is close
    with open(os.path.join(dataset_dir, r["target"]["path"]), "rb") as f:
        assert f.read() == r["target"]["video"]  # the record holds the very same mp4


def test_cli_writes_readable_mp4s_csv_poses_and_preview(dataset_dir):
    with open(os.path.join(dataset_dir, "CamCloneDataset.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == ("video_path", "caption", "ref_video_path", "content_video_path")
    assert len(rows) == 121
    paths = {p for row in rows[1:] for p in (row[0], row[2], row[3])}
    assert len(paths) == 40
    for p in sorted(paths)[::7]:
        assert not os.path.isabs(p)
        frames, fps = video.read_video(os.path.join(dataset_dir, p))
        assert frames.shape == (9, 32, 56, 3) and fps == 15.0
        assert frames.std() > 10
    entries = json.load(open(os.path.join(dataset_dir, "videos.json")))
    e = entries[13]
    header, pose_rows = T.parse_realestate10k(open(os.path.join(dataset_dir, e["pose_path"])).read())
    assert header == e["video_path"] and pose_rows.shape == (9, 19)
    rebuilt = T.build_trajectory(e["trajectory_name"], e["trajectory_params"], 9, 56 / 32)
    _, intr, c2w = T.from_realestate10k(pose_rows)
    np.testing.assert_allclose(T.relative_to_first(c2w), T.relative_to_first(rebuilt.c2w), atol=1e-4)
    np.testing.assert_allclose(intr, rebuilt.intrinsics, atol=1e-7)
    preview, _ = video.read_video(os.path.join(dataset_dir, "preview.mp4"))
    assert preview.shape == (9, 4 * 32 + 3 * 4, 3 * 56 + 2 * 4, 3)


def test_rerun_is_a_no_op_and_other_arguments_are_refused(dataset_dir, capsys):
    meta_path = os.path.join(dataset_dir, "metadata.json")
    files = ("metadata.json", "CamCloneDataset.csv", "preview.mp4")
    before = {p: os.stat(os.path.join(dataset_dir, p)).st_mtime_ns for p in files}
    assert cli.main(["--out", dataset_dir] + ARGS)["complete"]
    assert before == {p: os.stat(os.path.join(dataset_dir, p)).st_mtime_ns for p in before}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # one line, exit status 2 (camclone_jax.errors)
        cli.main(["--out", dataset_dir] + ARGS[:-2] + ["4", "--quiet"])
    assert stop.value.code == 2 and "other arguments" in capsys.readouterr().err
    assert json.load(open(meta_path))["config"]["seed"] == 3


def test_interrupted_run_resumes_without_rerendering(dataset_dir, monkeypatch):
    meta_path = os.path.join(dataset_dir, "metadata.json")
    meta = json.load(open(meta_path))
    json.dump(dict(meta, complete=False), open(meta_path, "w"))  # as if killed before the end
    csv_path = os.path.join(dataset_dir, "CamCloneDataset.csv")
    text = open(csv_path).read()
    os.remove(csv_path)
    monkeypatch.setattr(ds, "render_location", lambda *a, **k: pytest.fail("re-rendered a done shard"))
    assert cli.main(["--out", dataset_dir] + ARGS)["complete"]
    assert open(csv_path).read() == text


# ----------------------------------------------------------------------------- errors
def test_bad_arguments_are_rejected(tmp_path, capsys):
    for bad, word in ((["--height", "33"], "height"), (["--num_groups", "0"], "num_groups"),
                      (["--triplets_per_target", "40"], "triplets_per_target"),
                      (["--frames", "1"], "frames")):
        with pytest.raises(SystemExit):
            cli.main(["--out", str(tmp_path / "x")] + bad)
        assert word in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        cli.main(["--out", str(tmp_path / "busy")] + ARGS)
    assert stop.value.code == 2 and "not a dataset" in capsys.readouterr().err
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
    with pytest.raises(ValueError, match="num_shards"):
        writer.GeneratorConfig(num_groups=2, num_shards=3).validate()
    assert writer.GeneratorConfig(num_groups=10, num_shards=3).shards() == [(0, 3), (3, 6), (6, 10)]


def test_textured_rotation_world_from_the_cli(tmp_path):
    """The clone_3d world's options: textured daylight scenes without a subject, only the
    named moves at constant speed through the named lenses, recorded in the metadata; a bad
    move or lens is a one-line error; a dataset made before lens_mm existed is still this
    generator's dataset of the paper's lenses."""
    out = str(tmp_path / "world")
    argv = ["--out", out, "--num_groups", "1", "--frames", "5", "--height", "16",
            "--width", "16", "--moves", "pan,roll", "--max_angle", "20", "--max_roll", "30",
            "--constant_speed", "--scenes", "textured", "--quiet", "--preview_triplets", "0"]
    meta = cli.main(argv + ["--lens_mm", "50"])
    assert meta["complete"] and meta["config"]["scenes"] == "textured"
    assert meta["config"]["lens_mm"] == "50"
    with open(os.path.join(out, "videos.json")) as f:
        entries = json.load(f)
    assert {e["trajectory_name"] for e in entries} <= {"pan", "roll"}
    assert all(e["animation"] == "none" and e["palette"] == "day" for e in entries)
    assert all(e["trajectory_params"]["ease_a"] == 0.0 for e in entries)
    assert {e["trajectory_params"]["focal_mm"] for e in entries} == {50.0}
    frames, _ = video.read_video(os.path.join(out, entries[0]["video_path"]))
    assert frames.shape == (5, 16, 16, 3) and frames.std() > 10  # textured, not flat
    for bad in (["--moves", "spin"], ["--lens_mm", "50,wide"], ["--lens_mm", "0"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["--out", str(tmp_path / "bad")] + bad + ARGS)
        assert stop.value.code == 2
    old = str(tmp_path / "old")  # the metadata of a dataset made before lens_mm existed
    made = cli.main(argv[:1] + [old] + argv[2:])
    del made["config"]["lens_mm"]
    with open(os.path.join(old, "metadata.json"), "w") as f:
        json.dump(made, f)
    assert cli.main(argv[:1] + [old] + argv[2:])["complete"]


def _record(**overrides):
    v = lambda: {"video": b"mp4", "poses": np.zeros((2, 4, 4), np.float32),  # noqa: E731
                 "intrinsics": np.zeros((2, 4), np.float32), "scene_id": 0, "location_id": 0,
                 "trajectory_id": 0, "group_id": 0}
    rec = {"kind": "mp4", "caption": "c", "fps": 15.0, "height": 4, "width": 6, "num_frames": 2,
           "first_frame": np.zeros((4, 6, 3), np.uint8), "target": v(), "camera_ref": v(),
           "content_ref": v()}
    rec.update(overrides)
    return rec


def test_records_round_trip_and_reject_corrupt_bytes(tmp_path):
    data = records.encode_triplet(_record(extra={"note": [1, 2]}))
    back = records.decode_triplet(data)
    assert back["schema_version"] == records.SCHEMA_VERSION and back["extra"] == {"note": [1, 2]}
    np.testing.assert_array_equal(back["first_frame"], np.zeros((4, 6, 3), np.uint8))
    for bad in (data[: len(data) // 2], b"", b"\xc1garbage", data + b"\x00"):
        with pytest.raises(ValueError, match="corrupt"):
            records.decode_triplet(bad)
    raw = msgpack.unpackb(data)
    for key, change, match in (("schema_version", 2, "newer"), ("kind", "jpeg", "kind"),
                               ("fps", None, "fps")):
        mutated = dict(raw)
        mutated[key] = change
        with pytest.raises(ValueError, match=match):
            records.decode_triplet(msgpack.packb(mutated))
    del raw["content_ref"]
    with pytest.raises(ValueError, match="content_ref"):
        records.decode_triplet(msgpack.packb(raw))
    with pytest.raises(ValueError, match="poses"):
        bad_poses = dict(_record()["target"], poses=np.zeros((3, 4, 4), np.float32))
        records.encode_triplet(_record(target=bad_poses))
    with pytest.raises(ValueError, match="latents"):
        records.encode_triplet(_record(kind="latent"))


def test_write_records_is_atomic(tmp_path):
    path = str(tmp_path / "t.array_record")
    def failing():
        yield records.encode_triplet(_record())
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        records.write_records(path, failing())
    assert os.listdir(tmp_path) == []
    assert records.write_records(path, [b"a", b"bc"]) == 2
    assert list(records.read_records(path)) == [b"a", b"bc"]
    (tmp_path / "junk.array_record").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        list(records.read_records(str(tmp_path / "junk.array_record")))
    with pytest.raises(FileNotFoundError):
        records.num_records(str(tmp_path / "missing.array_record"))


def test_video_errors(tmp_path):
    frames = np.zeros((3, 16, 18, 3), np.uint8)
    with pytest.raises(ValueError, match="even"):
        video.write_mp4(str(tmp_path / "a.mp4"), frames[:, :15], 15)
    with pytest.raises(ValueError, match="uint8"):
        video.write_mp4(str(tmp_path / "a.mp4"), frames.astype(np.float32), 15)
    with pytest.raises(FileNotFoundError):
        video.read_video(str(tmp_path / "missing.mp4"))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        video.read_video(str(tmp_path / "bad.mp4"))
    assert sorted(os.listdir(tmp_path)) == ["bad.mp4"]  # no temporary files left behind
