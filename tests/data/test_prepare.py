"""CSV -> ArrayRecord conversion: round trip, rejections with reasons, resume after interruption."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from camclone_jax.data import prepare, records, video


def _shard_bytes(out, n):
    return [list(records.read_records(os.path.join(out, prepare.shard_name(s, n, "array_record"))))
            for s in range(n)]


def test_csv_conversion_round_trip(prepared_dir, synthetic_dir):
    rows = prepare.read_csv(os.path.join(synthetic_dir, "CamCloneDataset.csv"))
    shards = _shard_bytes(prepared_dir, 3)
    for s, shard in enumerate(shards):
        assert len(shard) == 40
        for j, raw in enumerate(shard):
            rec, row = records.decode_triplet(raw), rows[s + 3 * j]  # row r -> shard r % 3
            assert rec["source"] == f"CamCloneDataset.csv:{s + 3 * j}"
            assert rec["caption"] == row["caption"]
            assert [rec[k]["path"] for k in records.VIDEO_KEYS] == [
                row["video_path"], row["ref_video_path"], row["content_video_path"]]
            assert (rec["num_frames"], rec["height"], rec["width"], rec["fps"]) == (9, 32, 48, 15.0)
    with open(os.path.join(prepared_dir, "report.json")) as f:
        report = json.load(f)
    assert report["records_written"] == 120 and report["rows_rejected"] == 0 and report["complete"]


def _bad_csv(tmp_path, synthetic_dir):
    """A CSV whose rows are: good, missing file, unreadable, too short, size mismatch, empty."""
    good = prepare.read_csv(os.path.join(synthetic_dir, "CamCloneDataset.csv"))[0]
    good = {k: (os.path.join(synthetic_dir, v) if k != "caption" else v) for k, v in good.items()}
    (tmp_path / "garbage.mp4").write_bytes(b"not a video" * 50)
    video.write_mp4(str(tmp_path / "short.mp4"), np.zeros((3, 32, 48, 3), np.uint8), 15)
    video.write_mp4(str(tmp_path / "small.mp4"), np.zeros((9, 16, 24, 3), np.uint8), 15)
    rows = [good, dict(good, ref_video_path="nowhere.mp4"), dict(good, content_video_path="garbage.mp4"),
            dict(good, video_path="short.mp4"), dict(good, ref_video_path="small.mp4"),
            dict(good, caption=" ")]
    path = str(tmp_path / "CamCloneDataset.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, prepare.CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def test_rejected_rows_are_reported(tmp_path, synthetic_dir):
    report = prepare.prepare(_bad_csv(tmp_path, synthetic_dir), str(tmp_path / "out"), num_shards=2,
                             frames=9)
    assert report["records_written"] == 1 and report["rows_rejected"] == 5
    assert [(r["row"], r["reason"]) for r in report["rejected"]] == [
        (1, "missing_file"), (2, "unreadable"), (3, "too_few_frames"), (4, "size_mismatch"),
        (5, "bad_row")]
    assert "nowhere.mp4" in report["rejected"][0]["detail"] and "3 frames" in report["rejected"][2]["detail"]
    with open(tmp_path / "out" / "report.json") as f:
        assert json.load(f) == report
    low = prepare.prepare(_bad_csv(tmp_path, synthetic_dir), str(tmp_path / "out2"), num_shards=1,
                          frames=9, min_frames=3)
    assert low["records_written"] == 2  # the 3-frame video passes --min_frames 3


def test_interrupted_conversion_resumes_to_the_same_records(tmp_path, synthetic_dir):
    csv_path = os.path.join(synthetic_dir, "CamCloneDataset.csv")
    full = prepare.prepare(csv_path, str(tmp_path / "full"), num_shards=4, workers=2, frames=9)
    part_dir = str(tmp_path / "part")
    part = prepare.prepare(csv_path, part_dir, num_shards=4, frames=9, max_shards=1)
    assert not part["complete"] and part["shards_done"] == 1
    assert not os.path.exists(os.path.join(part_dir, "report.json"))
    # a crash mid-shard leaves a temporary file, or a shard file without its done-marker
    shutil.copy(os.path.join(str(tmp_path / "full"), prepare.shard_name(2, 4, "array_record")),
                os.path.join(part_dir, prepare.shard_name(1, 4, "array_record") + ".tmp"))
    shutil.copy(os.path.join(str(tmp_path / "full"), prepare.shard_name(3, 4, "array_record")),
                os.path.join(part_dir, prepare.shard_name(2, 4, "array_record")))
    resumed = prepare.prepare(csv_path, part_dir, num_shards=4, frames=9)
    assert resumed == full and resumed["records_written"] == 120
    assert _shard_bytes(part_dir, 4) == _shard_bytes(str(tmp_path / "full"), 4)
    assert not [f for f in os.listdir(part_dir) if f.endswith(".tmp")]
    with pytest.raises(ValueError, match="num_shards"):
        prepare.prepare(csv_path, part_dir, num_shards=5, frames=9)


def test_a_latin1_csv_is_status_2_naming_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "CamCloneDataset.csv"
    header = ",".join(prepare.CSV_COLUMNS)
    path.write_bytes(f"{header}\na.mp4,un caf\xe9 filmé,b.mp4,c.mp4\n".encode("latin-1"))
    with pytest.raises(SystemExit) as e:
        prepare.main(["--csv", str(path), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {path} is not UTF-8 text (byte 0xe9 on line 2" in err
    assert not os.path.exists(tmp_path / "out" / "report.json")
