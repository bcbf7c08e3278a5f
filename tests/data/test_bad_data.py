"""Bad data: corrupt records and unreadable or short videos are counted, logged and skipped
under a limit, else the loader stops; a corrupt ArrayRecord file is refused up front."""
import logging
import os

import numpy as np
import pytest

from camclone_jax.data import pipeline, records, transforms, video
from tests.data.conftest import CLIP, corrupt_copy


@pytest.fixture(scope="module")
def mixed_file(prepared_dir, tmp_path_factory):
    """6 good records, then garbage, a truncated record, an unreadable and a too-short video."""
    good = list(records.read_records(os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")))[:6]
    rec = records.decode_triplet(good[0])
    tmp = tmp_path_factory.mktemp("bad")
    video.write_mp4(str(tmp / "short.mp4"), np.zeros((3, 32, 48, 3), np.uint8), 15)
    unreadable = dict(rec, target=dict(rec["target"], video=b"\x00\x00\x00\x18ftypmp42" + b"x" * 99))
    short = dict(rec, camera_ref=dict(rec["camera_ref"], video=(tmp / "short.mp4").read_bytes()))
    bad = [b"\xc1 not msgpack", good[1][: len(good[1]) // 2], records.encode_triplet(unreadable),
           records.encode_triplet(short)]
    path = str(tmp / "mixed.array_record")
    records.write_records(path, good[:3] + bad[:2] + good[3:] + bad[2:])
    return path


def _cfg(**kw):
    clip = transforms.ClipConfig(**{**CLIP, **kw.pop("clip", {})})
    return pipeline.PipelineConfig(**{**dict(clip=clip, batch_size=2, num_epochs=1, num_workers=0,
                                             process_index=0, process_count=1, shuffle=False), **kw})


def test_bad_examples_are_counted_logged_and_skipped(mixed_file, caplog):
    loader = pipeline.make_loader(mixed_file, _cfg(max_bad_records=4))
    with caplog.at_level(logging.WARNING, logger="camclone_jax.data.pipeline"):
        batches = list(loader)
    assert np.concatenate([b["index"] for b in batches]).tolist() == [0, 1, 2, 5, 6, 7]
    assert loader.bad_records == 2  # the two bad records before a good one; then the tail:
    text = caplog.text
    for reason in ("corrupt triplet record", "unreadable video", "too few frames: 3 < 9"):
        assert reason in text
    assert "record 3" in text and "record 4" in text and "record 9" in text


def test_too_many_bad_examples_stop_the_loader(mixed_file):
    with pytest.raises(pipeline.BadDataError, match="max_bad_records=1"):
        list(pipeline.make_loader(mixed_file, _cfg(max_bad_records=1)))


def test_repeat_last_accepts_the_short_video(mixed_file):
    cfg = _cfg(clip=dict(short_video="repeat_last"), batch_size=1, max_bad_records=3)
    loader = pipeline.make_loader(mixed_file, cfg)
    got = [b for b in loader]
    assert [int(b["index"][0]) for b in got] == [0, 1, 2, 5, 6, 7, 9]
    np.testing.assert_array_equal(got[-1]["camera_ref"][0, 1], got[-1]["camera_ref"][0, 2])


def test_corrupt_or_truncated_file_is_refused(mixed_file, tmp_path):
    data = open(mixed_file, "rb").read()
    (tmp_path / "cut.array_record").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        pipeline.make_loader(str(tmp_path / "cut.array_record"), _cfg())
    with pytest.raises(FileNotFoundError, match="no ArrayRecord files"):
        pipeline.make_loader(str(tmp_path / "empty_dir_*"), _cfg())


def test_a_corrupt_chunk_is_skipped_in_place_naming_file_and_position(prepared_dir, tmp_path,
                                                                      caplog):
    src = os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")
    os.makedirs(tmp_path / "clean")
    records.write_records(str(tmp_path / "clean" / "a.array_record"),
                          list(records.read_records(src))[:12])
    bad = corrupt_copy(str(tmp_path / "clean"), str(tmp_path / "bad"), {5})
    with pytest.raises(RuntimeError, match=r"unreadable record 5 of .*a\.array_record"):
        list(records.read_records(os.path.join(bad, "a.array_record")))
    cfg = _cfg(batch_size=2, shuffle=True, max_bad_records=1)
    clean = np.concatenate([b["index"] for b in pipeline.make_loader(str(tmp_path / "clean"), cfg)])
    with caplog.at_level(logging.WARNING, logger="camclone_jax.data.pipeline"):
        loader = pipeline.make_loader(bad, cfg)
        got = [b for b in loader]
    assert 5 in clean and loader.bad_records == 1
    want = [i for i in clean if i != 5]  # every other example in its place (one batch shifts)
    assert np.concatenate([b["index"] for b in got]).tolist() == want[:len(want) // 2 * 2]
    assert "a.array_record, record 5" in caplog.text and "chunk data hash mismatch" in caplog.text
