"""The camclone_triplets TFDS builder: built from records or a CSV, read into the Grain pipeline."""
import csv
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from camclone_jax.data import pipeline, prepare, records, tfds_builder, transforms
from tests.data.conftest import CLIP, corrupt_copy


def test_builder_from_records_round_trip(synthetic_dir, tmp_path):
    src = os.path.join(synthetic_dir, "records")
    builder = tfds_builder.CamcloneTriplets(data_dir=str(tmp_path), config=tfds_builder.source_config(src))
    builder.download_and_prepare()
    source = tfds.data_source("camclone_triplets/records", data_dir=str(tmp_path))["train"]
    want = [raw for f in sorted(os.listdir(src)) for raw in records.read_records(os.path.join(src, f))]
    got = [source[i] for i in range(len(source))]
    assert sorted(g["record"] for g in got) == sorted(want)
    first = records.decode_triplet(got[0]["record"])
    assert got[0]["caption"].decode() == first["caption"] and got[0]["kind"] == b"mp4"  # Text: bytes
    assert int(got[0]["num_frames"]) == 9 and (int(got[0]["height"]), int(got[0]["width"])) == (32, 48)
    cfg = pipeline.PipelineConfig(clip=transforms.ClipConfig(**CLIP), batch_size=3, num_epochs=1,
                                  num_workers=0, process_index=0, process_count=1)
    batch = next(pipeline.make_loader(source, cfg))
    assert batch["target"].shape == (3, 5, 16, 24, 3)
    assert [records.decode_triplet(got[i]["record"])["caption"] for i in batch["index"]] == list(batch["caption"])


def test_builder_from_csv_rejects_bad_rows(synthetic_dir, tmp_path, caplog):
    rows = prepare.read_csv(os.path.join(synthetic_dir, "CamCloneDataset.csv"))[:2]
    rows = [{k: (os.path.join(synthetic_dir, v) if k != "caption" else v) for k, v in r.items()} for r in rows]
    rows.append(dict(rows[0], video_path="missing.mp4"))
    path = str(tmp_path / "mine" / "CamCloneDataset.csv")
    os.makedirs(os.path.dirname(path))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, prepare.CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    builder = tfds_builder.CamcloneTriplets(data_dir=str(tmp_path / "tfds"),
                                            config=tfds_builder.source_config(path, frames=9))
    builder.download_and_prepare()
    source = builder.as_data_source()["train"]
    assert len(source) == 2 and "row 2 rejected (missing_file)" in caplog.text
    caps = sorted(records.decode_triplet(source[i]["record"])["caption"] for i in range(2))
    assert caps == sorted(r["caption"] for r in rows[:2])
    assert [source[i]["kind"] for i in range(2)] == [b"mp4", b"mp4"]


def test_unreadable_records_are_skipped_by_the_builder_and_the_source(synthetic_dir, tmp_path,
                                                                      caplog):
    bad = corrupt_copy(os.path.join(synthetic_dir, "records"), str(tmp_path / "bad"), {3})
    builder = tfds_builder.CamcloneTriplets(data_dir=str(tmp_path / "tfds"),
                                            config=tfds_builder.source_config(bad))
    with caplog.at_level(logging.WARNING):
        builder.download_and_prepare()
    assert "skipping unreadable record 3 of" in caplog.text and "hash mismatch" in caplog.text
    assert len(builder.as_data_source()["train"]) == 119  # the others, under their own keys
    # the built dataset's own file rots: the Grain loader skips the record, naming the file
    corrupt_copy(builder.data_dir, builder.data_dir, {7})
    shard = next(f for f in os.listdir(builder.data_dir) if ".array_record" in f)
    cfg = pipeline.PipelineConfig(clip=transforms.ClipConfig(**CLIP), batch_size=4, num_epochs=1,
                                  num_workers=0, process_index=0, process_count=1,
                                  shuffle=False, max_bad_records=1)
    loader = pipeline.make_loader(builder.as_data_source()["train"], cfg)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="camclone_jax.data.pipeline"):
        got = [b["index"] for _, b in zip(range(3), loader)]
    assert 7 not in np.concatenate(got) and loader.bad_records == 1
    assert f"{shard}, record 7" in caplog.text
