"""The wallpaper world mixed into a records stream (data/world_mix.py): which positions take a
wallpaper example, that the others keep their records, the decaying schedule, host slicing."""
import os

import numpy as np
import pytest

from camclone_jax.data import pipeline, records, wallpaper
from camclone_jax.data.curriculum import Curriculum
from camclone_jax.data.transforms import ClipConfig
from camclone_jax.data.wallpaper_source import WallpaperSource
from tests.data.conftest import latent_record

# 2 latent frames of 2 x 2 cells of 4 px: latents [2, 2, 2, 48], frames 5 of 8 x 8 pixels
WORLD = wallpaper.WallpaperWorld(cells=(2, 2), latent_frames=2, scene_scale=2)
CLIP = ClipConfig(kind="latent", num_frames=5, height=8, width=8)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """64 latent records of the wallpaper world's shape (latents filled with the index)."""
    out = str(tmp_path_factory.mktemp("mix"))
    recs = [latent_record(i, frames=5, height=8, width=8, latent_shape=(2, 2, 2, 48))
            for i in range(64)]
    records.write_records(os.path.join(out, "no_i2v", "latents-00000-of-00001.array_record"),
                          [records.encode_triplet(r) for r in recs])
    for r in recs:  # as the trainer encodes them: with Wan I2V's image-condition latents
        r["i2v_latents"] = np.zeros((2, 2, 2, 48), np.float16)
    records.write_records(os.path.join(out, "latents-00000-of-00001.array_record"),
                          [records.encode_triplet(r) for r in recs])
    for r in recs:  # with cached caption embeddings, which the world has no text for
        r["text_embedding"] = np.zeros((2, 4), np.float16)
    records.write_records(os.path.join(out, "text", "latents-00000-of-00001.array_record"),
                          [records.encode_triplet(r) for r in recs])
    return out


def batches(path, n, mix, source, **kw):
    cfg = pipeline.PipelineConfig(clip=kw.pop("clip", CLIP), batch_size=kw.pop("batch_size", 8),
                                  num_workers=0,
                                  shuffle=False, process_index=kw.pop("process_index", 0),
                                  process_count=kw.pop("process_count", 1), mix=mix, **kw)
    loader = pipeline.make_loader(path, cfg, mix_source=source)
    return [next(loader) for _ in range(n)]


def test_mixed_positions_take_the_wallpaper_example_and_the_rest_keep_their_records(records_dir):
    source = WallpaperSource(WORLD, seed=5, length=2 ** 20)
    plain = batches(records_dir, 4, Curriculum(), None)
    mixed = batches(records_dir, 4, Curriculum(0.5, 0, 8), source)
    from_world = np.concatenate([b["caption"] == "" for b in mixed])  # [32]
    assert 0.2 < from_world.mean() < 0.8
    for p, m in zip(plain, mixed):
        assert set(m) == set(p)  # a wallpaper example looks like a latent record's
        for row in range(8):
            if m["caption"][row] == "":
                want = source[int(m["index"][row])]["target"]  # example i of the source
            else:
                want = p["target"][row]  # the record that was there without the mix
            np.testing.assert_array_equal(m["target"][row], want)
    # the schedule decays: every example of step 0 is the world's, none from step 2
    decaying = batches(records_dir, 3, Curriculum(1.0, 2, 8), source)
    assert (decaying[0]["caption"] == "").all() and (decaying[2]["caption"] != "").all()
    # two hosts of batch 4 see exactly what one host of batch 8 sees
    hosts = [batches(records_dir, 2, Curriculum(0.5, 0, 8), source, batch_size=4,
                     process_index=p, process_count=2) for p in range(2)]
    for j in range(2):
        np.testing.assert_array_equal(
            np.concatenate([hosts[0][j]["target"], hosts[1][j]["target"]]), mixed[j]["target"])
    with pytest.raises(ValueError, match="takes records and a procedural mix_source"):
        batches(records_dir, 1, Curriculum(0.5, 0, 8), None)


def test_only_the_records_fields_are_kept_and_a_field_the_world_lacks_is_refused(records_dir):
    source = WallpaperSource(WORLD, seed=5, length=2 ** 20)
    got = batches(os.path.join(records_dir, "no_i2v"), 1, Curriculum(0.5, 0, 8), source)[0]
    assert "i2v_latents" not in got and (got["caption"] == "").any()  # the world's is dropped
    with pytest.raises(ValueError, match=r"the records have \['text_embedding'\], which the "
                                         "mixed-in world does not make"):
        batches(os.path.join(records_dir, "text"), 1, Curriculum(0.5, 0, 8), source,
                clip=ClipConfig(kind="latent", num_frames=5, height=8, width=8, text_len=2))
