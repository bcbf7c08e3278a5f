"""The wallpaper world (data/wallpaper.py), its camera reading (eval/shift_camera.py), the tiny
CamClone trainer (wallpaper_train.py) and the held-out scores (wallpaper_eval.py), at a tiny size."""
import json

import jax
import numpy as np
import pytest

from camclone_jax import inference, wallpaper_eval, wallpaper_train
from camclone_jax.data import wallpaper
from camclone_jax.eval import shift_camera

WORLD = wallpaper.WallpaperWorld()


def test_latent_triplets_move_target_and_camera_reference_together():
    target, cam, vel = wallpaper.latent_triplets(jax.random.key(0), WORLD, 6)
    assert target.shape == cam.shape == (6, 5, 4, 4, 48)
    t, c = np.asarray(target), np.asarray(cam)
    for i, (dy, dx) in enumerate(np.asarray(vel)):
        for k in range(5):
            np.testing.assert_array_equal(np.roll(t[i, 0], (k * dy, k * dx), (0, 1)), t[i, k])
            np.testing.assert_array_equal(np.roll(c[i, 0], (k * dy, k * dx), (0, 1)), c[i, k])
    assert not np.allclose(t, c)  # other scenes
    same, cam_same, _ = wallpaper.latent_triplets(jax.random.key(0), WORLD, 6, same_scene=1.0)
    np.testing.assert_array_equal(same, cam_same)


def test_rendered_clips_encode_to_the_training_latents():
    """The pixel clip the CLI reads (every frame) encodes, through the pixel codec, to the
    latents training draws (to uint8 rounding)."""
    wall = np.asarray(wallpaper.wallpapers(jax.random.key(1), WORLD, 1))[0]  # [16, 16, 3]
    clip = wallpaper.render_clip(wall, WORLD, (1, -1))  # [17, 16, 16, 3]
    assert clip.shape == (17, 16, 16, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip[1], np.roll(clip[0], (1, -1), (0, 1)))  # 1 px a frame
    latents = np.asarray(WORLD.codec.encode(clip[None].astype(np.float32) / 127.5 - 1.0))[0]
    expect = np.asarray(wallpaper.rolled(
        WORLD.codec.encode(wall[None, None])[:, 0], np.arange(5)[None, :, None] * [[[1, -1]]]))[0]
    np.testing.assert_allclose(latents, expect, atol=2 * 2.0 / 255)


@pytest.mark.parametrize("paths", ["constant", "path"])
def test_shift_reading_is_exact_on_the_ground_truth(paths):
    clips = wallpaper_eval.held_out_clips(WORLD, 12, paths)
    scores = wallpaper_eval.score_videos([c.target for c in clips], clips, WORLD)
    assert scores == {"rot_err": 0.0, "psnr": float("inf"), "read": 12, "clips": 12}
    static = [np.repeat(c.first_frame[None], 17, 0) for c in clips]
    assert wallpaper_eval.score_videos(static, clips, WORLD)["rot_err"] > 10
    if paths == "path":  # the camera turns within a clip
        assert any(len({tuple(s) for s in c.steps_cells}) > 1 for c in clips)


def test_shift_reading_fails_on_frames_without_a_shift_and_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 16, 16, 3), np.uint8)  # unrelated frames
    assert shift_camera.estimate(noise, WORLD.focal_px) is None
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        shift_camera.frame_shifts(noise[..., 0])


def test_trainer_logs_gaps_resumes_and_exports_a_model_the_sampler_reads(tmp_path):
    recipe = wallpaper_train.Recipe(dim=32, head_dim=16, layers=1, batch=2, probe_batch=2)
    work = str(tmp_path / "run")
    wallpaper_train.train(recipe, work, 2, save_every=1, log_every=1, export=False,
                          log=lambda _: None)
    records = wallpaper_train.train(recipe, work, 3, save_every=1, log_every=1,
                                    log=lambda _: None)  # resumes at step 2
    assert [r["step"] for r in records] == [2, 3]
    log = [json.loads(line) for line in open(f"{work}/log.jsonl")]
    assert [r["step"] for r in log] == [0, 1, 2, 2, 3]
    assert all(np.isfinite(r[task]["gap"]) for r in log for task in ("i2v", "v2v"))
    pipe = inference.CamClonePipeline.from_checkpoint(f"{work}/export")
    clips = wallpaper_eval.held_out_clips(WORLD, 1)
    rows = wallpaper_eval.evaluate({"tiny": pipe}, clips, WORLD, steps=2, log=lambda _: None)
    assert [(r["task"], r["row"]) for r in rows] == [
        (task, row) for task in ("i2v", "v2v") for row in (
            "ground truth", "copy first frame", "tiny", "tiny, camera reference zeroed")]
    assert all(r["clips"] == 1 and np.isfinite(r["psnr"]) for r in rows[2:4])
    assert "| I2V | ground truth | 0.00 | 1/1 | inf |" in wallpaper_eval.markdown(rows)
