"""Shared fixtures of the triplet-pipeline tests: one tiny synthetic dataset per session and
its conversion to ArrayRecord shards (both a few seconds on one CPU core)."""
import json
import os

import numpy as np
import pytest

from camclone_jax.data import prepare, records
from camclone_jax.data.synthetic import writer

CLIP = dict(num_frames=5, height=16, width=24, frame_stride=2)  # tiny clips for the tests


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A 1-group synthetic dataset: 120 triplets of 9-frame 32x48 videos + CamCloneDataset.csv."""
    out = str(tmp_path_factory.mktemp("camclone") / "synthetic")
    writer.generate_dataset(out, writer.GeneratorConfig(
        num_groups=1, frames=9, height=32, width=48, seed=0, preview_triplets=0), progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_dir(synthetic_dir, tmp_path_factory):
    """The synthetic CSV converted to 3 mp4-kind shards (40 records each)."""
    out = str(tmp_path_factory.mktemp("camclone") / "prepared")
    report = prepare.prepare(os.path.join(synthetic_dir, "CamCloneDataset.csv"), out,
                             num_shards=3, workers=1, frames=9)
    assert report["complete"] and report["records_written"] == 120
    return out


def latent_record(i, frames=5, height=16, width=24, latent_shape=(2, 2, 3, 4), caption=None):
    """A latent-kind record with recognisable values (latents filled with i)."""
    lat = lambda k: np.full(latent_shape, i + k / 10, np.float16)  # noqa: E731  [L, h, w, C]
    return {"kind": "latent", "caption": caption or f"caption {i}", "fps": 15.0, "height": 32,
            "width": 48, "num_frames": 9, "first_frame": np.full((height, width, 3), i % 256, np.uint8),
            "latent_info": {"frames": frames, "height": height, "width": width,
                            "vae": json.dumps({"z_dim": latent_shape[-1]}), "normalized": True},
            **{k: {"latents": lat(j), **{key: -1 for key in records.ID_KEYS}}
               for j, k in enumerate(records.VIDEO_KEYS)}}


@pytest.fixture(scope="session")
def latent_dir(tmp_path_factory):
    """200 latent-kind records (latents filled with the record index) in 2 shards."""
    out = str(tmp_path_factory.mktemp("camclone") / "latent")
    for s in range(2):
        records.write_records(os.path.join(out, f"latents-{s:05d}-of-00002.array_record"),
                              [records.encode_triplet(latent_record(i)) for i in range(s * 100, s * 100 + 100)])
    return out


def corrupt_copy(src_dir, out_dir, bad):
    """Copies the ArrayRecord files of ``src_dir`` to ``out_dir`` (uncompressed, one record per
    chunk) with bytes flipped inside the records of global index in ``bad``: their chunks fail
    the hash check when read, while each file's index still opens (as bytes rotting on disk)."""
    os.makedirs(out_dir, exist_ok=True)
    index = 0
    for name in sorted(f for f in os.listdir(src_dir) if ".array_record" in f):  # tfds: -00000-of-
        raws = list(records.read_records(os.path.join(src_dir, name)))
        path = os.path.join(out_dir, name)
        records.write_records(path, raws, options="group_size:1,uncompressed")
        data = bytearray(open(path, "rb").read())
        at = 0
        for i, raw in enumerate(raws, start=index):
            # uncompressed records lie verbatim and in order (but for riegeli's block headers);
            # triplets share videos, so find each record's start after the previous record
            at = _find(data, raw, 0, at)
            if i in bad:
                mid = _find(data, raw, len(raw) // 2, at)  # inside record i
                data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
            at += len(raw) // 2
        open(path, "wb").write(bytes(data))
        index += len(raws)
    return out_dir


def _find(data, raw, offset, start):
    """Where raw[offset:] lies in ``data`` from ``start`` on (a piece that a block header does
    not cut: one of three tried)."""
    for o in (offset, offset + 100, offset + 200):
        at = data.find(raw[o:o + 32], start)
        if at >= 0:
            return at
    raise ValueError("record not found in the file")
