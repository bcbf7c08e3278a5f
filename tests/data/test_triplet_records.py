"""Record schema: mp4 and latent kinds round trip; the v1 additions are validated."""
import os

import numpy as np
import pytest

from camclone_jax.data import records, video
from tests.data.conftest import latent_record


def test_mp4_record_round_trip(prepared_dir, synthetic_dir):
    path = os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")
    raw = next(records.read_records(path))
    rec = records.decode_triplet(raw)
    assert rec["kind"] == "mp4" and rec["source"] == "CamCloneDataset.csv:0"
    for key in records.VIDEO_KEYS:
        with open(os.path.join(synthetic_dir, rec[key]["path"]), "rb") as f:
            assert rec[key]["video"] == f.read()  # stored byte for byte
        assert "poses" not in rec[key] and rec[key]["scene_id"] == -1
    frames, _ = video.read_video(os.path.join(synthetic_dir, rec["target"]["path"]))
    np.testing.assert_array_equal(video.decode_png(rec["first_frame"]), frames[0])
    assert records.encode_triplet(rec) == raw  # re-encoding is stable


def test_latent_record_round_trip():
    rec = latent_record(7)
    rec["i2v_latents"] = np.ones((2, 2, 3, 4), np.float32)
    rec["text_embedding"], rec["text_encoder"] = np.ones((3, 8), np.float16), "umt5-xxl"
    back = records.decode_triplet(records.encode_triplet(rec))
    for key in records.VIDEO_KEYS:
        np.testing.assert_array_equal(back[key]["latents"], rec[key]["latents"])
        assert back[key]["latents"].dtype == np.float16
    assert back["latent_info"] == rec["latent_info"] and back["text_encoder"] == "umt5-xxl"
    np.testing.assert_array_equal(back["i2v_latents"], 1.0)


@pytest.mark.parametrize("change, match", [
    (lambda r: r.pop("latent_info") and r.update(first_frame=np.zeros((32, 48, 3), np.uint8)),
     "latent_info"),
    (lambda r: r["latent_info"].update(frames=0), "latent_info.frames"),
    (lambda r: r["target"].update(latents=np.zeros((2, 2, 3, 5), np.float16)), "shapes differ"),
    (lambda r: r["target"].update(latents=np.zeros((2, 2, 3, 4), np.int8)), "float16/float32"),
    (lambda r: r.update(text_embedding=np.zeros(3, np.float32)), "text_embedding"),
    (lambda r: r.update(first_frame=np.zeros((32, 48, 3), np.uint8)), "first_frame"),
])
def test_latent_record_errors(change, match):
    rec = latent_record(0)
    change(rec)
    with pytest.raises(ValueError, match=match):
        records.encode_triplet(rec)
