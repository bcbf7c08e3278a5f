"""Grain pipeline: determinism, host sharding, checkpointed state, shapes, task mix, mesh."""
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from camclone_jax.data import pipeline, transforms, video
from tests.data.conftest import CLIP


def _cfg(**kw):
    clip = transforms.ClipConfig(**{**CLIP, **kw.pop("clip", {})})
    base = dict(clip=clip, batch_size=4, num_epochs=1, num_workers=0, process_index=0,
                process_count=1)
    return pipeline.PipelineConfig(**{**base, **kw})


def _shard0(prepared_dir):
    return os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def test_deterministic_per_seed(prepared_dir):
    a = _take(pipeline.make_loader(_shard0(prepared_dir), _cfg(seed=3)), 2)
    b = _take(pipeline.make_loader(_shard0(prepared_dir), _cfg(seed=3)), 2)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    c = next(pipeline.make_loader(_shard0(prepared_dir), _cfg(seed=4)))
    assert not np.array_equal(a[0]["index"], c["index"])


def test_two_processes_see_disjoint_shards_covering_the_epoch(latent_dir):
    seen = []
    for p in range(2):
        cfg = _cfg(clip=dict(kind="latent"), batch_size=10, process_index=p, process_count=2)
        seen.append(np.concatenate([b["index"] for b in pipeline.make_loader(latent_dir, cfg)]))
    assert len(seen[0]) == len(seen[1]) == 100
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(200))
    # The global batches equal one host's with the doubled batch: same examples, same order.
    one = pipeline.make_loader(latent_dir, _cfg(clip=dict(kind="latent"), batch_size=20))
    glob = [np.concatenate([a, b]) for a, b in zip(np.split(seen[0], 10), np.split(seen[1], 10))]
    for mine, whole in zip(glob, one):
        np.testing.assert_array_equal(mine, whole["index"])


def test_skip_batches_starts_at_a_later_global_batch(latent_dir):
    cfg = _cfg(clip=dict(kind="latent"), batch_size=8, num_epochs=2)
    full = [b["index"] for b in _take(pipeline.make_loader(latent_dir, cfg), 30)]
    later = [b["index"] for b in _take(pipeline.make_loader(latent_dir, cfg, skip_batches=27), 3)]
    for x, y in zip(full[27:], later):
        np.testing.assert_array_equal(x, y)


def test_state_restored_mid_epoch_gives_the_same_next_batches(latent_dir, tmp_path):
    cfg = _cfg(clip=dict(kind="latent"), batch_size=8, num_epochs=2)
    loader = pipeline.make_loader(latent_dir, cfg)
    _take(loader, 20)  # into the second epoch
    state = loader.get_state()
    expected = _take(loader, 6)
    restored = pipeline.make_loader(latent_dir, cfg)
    restored.set_state(state)
    for x, y in zip(expected, _take(restored, 6)):
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["target"], y["target"])
        np.testing.assert_array_equal(x["task"], y["task"])


def test_state_with_worker_processes_through_grain_checkpoint_handler(prepared_dir, tmp_path):
    from etils import epath
    import grain
    cfg = _cfg(num_workers=2, batch_size=2)
    loader = pipeline.make_loader(_shard0(prepared_dir), cfg)
    _take(loader, 3)
    grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), loader)  # what orbax calls
    expected = [b["index"] for b in _take(loader, 3)]
    loader.close()
    restored = grain.checkpoint.CheckpointHandler().restore(
        epath.Path(tmp_path), pipeline.make_loader(_shard0(prepared_dir), cfg))
    got = [b["index"] for b in _take(restored, 3)]
    restored.close()
    np.testing.assert_array_equal(expected, got)


def test_frame_sampling_rule():
    c = lambda **kw: transforms.ClipConfig(num_frames=4, **kw)  # noqa: E731
    np.testing.assert_array_equal(transforms.frame_indices(20, c(frame_stride=1)), [0, 1, 2, 3])
    np.testing.assert_array_equal(transforms.frame_indices(20, c(frame_stride=3)), [0, 3, 6, 9])
    np.testing.assert_array_equal(transforms.frame_indices(10, c(frame_stride=0)), [0, 3, 6, 9])
    np.testing.assert_array_equal(
        transforms.frame_indices(5, c(frame_stride=2, short_video="repeat_last")), [0, 2, 4, 4])
    with pytest.raises(transforms.BadExample, match="too few frames: 5 < 7"):
        transforms.frame_indices(5, c(frame_stride=2))
    assert transforms.frames_needed(c(frame_stride=2)) == 7


def test_clip_shapes_values_and_centre_crop(prepared_dir, tmp_path):
    batch = next(pipeline.make_loader(_shard0(prepared_dir), _cfg(batch_size=2)))
    for k in ("target", "camera_ref", "content_ref"):
        assert batch[k].shape == (2, 5, 16, 24, 3) and batch[k].dtype == np.float32
    assert batch["first_frame"].shape == (2, 16, 24, 3)
    assert -1 <= batch["target"].min() and batch["target"].max() <= 1
    np.testing.assert_array_equal(batch["first_frame"], batch["target"][:, 0])
    raw = next(pipeline.make_loader(_shard0(prepared_dir), _cfg(batch_size=2, clip=dict(pixel_dtype="uint8"))))
    assert raw["target"].dtype == np.uint8 and raw["first_frame"].dtype == np.uint8
    np.testing.assert_array_equal(transforms.to_float(raw["camera_ref"]), batch["camera_ref"])
    # the crop rule on a video whose halves differ: 20x40 -> scale 1 (height) -> keep the centre
    frames = np.zeros((9, 20, 60, 3), np.uint8)
    frames[:, :, 20:40] = 200  # the centre third is bright
    video.write_mp4(str(tmp_path / "v.mp4"), frames, 15)
    clip = transforms.load_clip((tmp_path / "v.mp4").read_bytes(),
                                transforms.ClipConfig(num_frames=3, height=10, width=10, frame_stride=4))
    assert clip.shape == (3, 10, 10, 3) and clip.min() > 150  # 20x60 -> 10x30, centre 10 columns


def test_task_ratio_and_i2v_zeroes_the_content(latent_dir):
    cfg = _cfg(clip=dict(kind="latent", v2v_ratio=0.3), batch_size=20)
    batches = list(pipeline.make_loader(latent_dir, cfg))
    task = np.concatenate([b["task"] for b in batches])
    assert len(task) == 200 and abs(task.mean() - 0.3) < 0.1
    for b in batches:
        content_energy = np.abs(b["content_ref"]).reshape(len(b["task"]), -1).sum(1)
        np.testing.assert_array_equal(content_energy > 0, b["task"] == transforms.V2V)
        np.testing.assert_allclose(b["target"][:, 0, 0, 0, 0], b["index"], atol=0.1)
    all_v2v = next(pipeline.make_loader(latent_dir, _cfg(clip=dict(kind="latent", v2v_ratio=1.0))))
    assert (all_v2v["task"] == transforms.V2V).all()


def test_config_mismatch_raises(latent_dir, prepared_dir):
    with pytest.raises(ValueError, match="kind 'latent'"):
        next(pipeline.make_loader(latent_dir, _cfg()))
    with pytest.raises(ValueError, match="re-encode"):
        next(pipeline.make_loader(latent_dir, _cfg(clip=dict(kind="latent", num_frames=9))))


def test_global_batch_on_a_mesh(latent_dir):
    batch = next(pipeline.make_loader(latent_dir, _cfg(clip=dict(kind="latent"), batch_size=8)))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("data",))
    out = pipeline.global_batch(batch, mesh)
    assert isinstance(out["target"], jax.Array) and out["target"].shape == batch["target"].shape
    assert len(out["target"].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(out["index"]), batch["index"])
    assert out["caption"].dtype.kind == "U"
    # On the training mesh the batch is split over data x fsdp, as the model's sharding rules say.
    from camclone_jax import sharding

    full = pipeline.global_batch(batch, sharding.make_mesh({"data": 2, "fsdp": 4}))
    assert tuple(full["target"].sharding.spec)[0] == ("data", "fsdp")
    assert len(full["target"].sharding.device_set) == 8


def test_same_scene_curriculum_on_records(latent_dir):
    """data/curriculum.py on records: early camera references are the target itself, decaying
    by step; the draw follows the global position, so two hosts see what one host sees, and a
    loader resumed with skip_batches continues the same draws."""
    from camclone_jax.data.curriculum import Curriculum
    aid = Curriculum(1.0, 10, 8)  # all at step 0, none from step 10
    cfg = _cfg(clip=dict(kind="latent"), batch_size=8, num_epochs=2, same_scene=aid)
    batches = _take(pipeline.make_loader(latent_dir, cfg), 14)
    same = np.array([[np.array_equal(b["camera_ref"][i], b["target"][i]) for i in range(8)]
                     for b in batches])  # [step, example]
    assert same[0].all() and not same[10:].any()
    assert 0 < same[3:8].mean() < 1  # the decay draws per example
    plain = next(pipeline.make_loader(latent_dir, _cfg(clip=dict(kind="latent"), batch_size=8,
                                                       num_epochs=2)))
    np.testing.assert_array_equal(plain["target"], batches[0]["target"])  # order unchanged
    later = _take(pipeline.make_loader(latent_dir, cfg, skip_batches=5), 2)
    for x, y in zip(batches[5:7], later):
        np.testing.assert_array_equal(x["camera_ref"], y["camera_ref"])
    halves = [next(pipeline.make_loader(latent_dir, _cfg(
        clip=dict(kind="latent"), batch_size=4, num_epochs=2, same_scene=aid, process_index=p,
        process_count=2))) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["camera_ref"] for h in halves]),
                                  batches[0]["camera_ref"])
    with pytest.raises(ValueError, match="same_scene"):
        Curriculum(1.5, 10)
