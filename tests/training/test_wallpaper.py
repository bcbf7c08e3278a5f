"""The wallpaper world (data/wallpaper.py), its camera reading (eval/shift_camera.py), the tiny
CamClone trainer (training/wallpaper.py) and the held-out scores (training/wallpaper_eval.py), at a
tiny size."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import inference
from camclone_jax.data import wallpaper
from camclone_jax.eval import shift_camera
from camclone_jax.training import wallpaper as wallpaper_train
from camclone_jax.training import wallpaper_eval

WORLD = wallpaper.WallpaperWorld()
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "benchmarks")
sys.path.insert(0, BENCH)

import clone_eval  # noqa: E402
import clone_strip  # noqa: E402
import time_to_clone  # noqa: E402


def test_translation_is_exact_for_whole_pixels():
    spec = wallpaper.smooth_spectra(jax.random.key(0), 1, 8, 12, blur=1.0)  # [1, 8, 12, 3]
    shifts = jnp.array([[[0.0, 0.0], [2.0, -3.0]]])  # [1, 2 frames, (dy, dx)]
    frames = np.asarray(wallpaper.translated_spectra(spec, shifts))  # [1, 2, 8, 12, 3]
    np.testing.assert_allclose(frames[0, 1], np.roll(frames[0, 0], (2, -3), (0, 1)), atol=1e-5)
    np.testing.assert_allclose(frames[0, 0].std(), 1.0, rtol=1e-4)


def test_latent_triplets_move_target_and_camera_reference_together():
    target, cam, content, vel = wallpaper.latent_triplets(jax.random.key(0), WORLD, 6)
    assert target.shape == cam.shape == content.shape == (6, 5, 4, 4, 48)
    t, c = np.asarray(target), np.asarray(cam)
    np.testing.assert_array_equal(content[:, 0], target[:, 0])  # V2V: the same frame 0
    for i, (dy, dx) in enumerate(np.asarray(vel)):
        for k in range(5):
            np.testing.assert_array_equal(np.roll(t[i, 0], (k * dy, k * dx), (0, 1)), t[i, k])
            np.testing.assert_array_equal(np.roll(c[i, 0], (k * dy, k * dx), (0, 1)), c[i, k])
    assert not np.allclose(t, c)  # other scenes
    same, cam_same, _, _ = wallpaper.latent_triplets(jax.random.key(0), WORLD, 6, same_scene=1.0)
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
    assert scores == {"rot_err": 0.0, "psnr": float("inf"), "read": 12, "clips": 12,
                      "per_clip": [0.0] * 12}
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


def test_time_to_clone_reports_steps_wall_time_and_the_gap(tmp_path):
    out = tmp_path / "ttc.jsonl"
    result = time_to_clone.main(["--tiny", "--max_steps", "2", "--log_every", "1",
                                 "--threshold", "1e9", "--out", str(out), "--set", "lr=3e-4"])
    assert result["steps"] == 2 and not result["reached"] and result["wall_s"] > 0
    assert np.isfinite(result["gap"]) and result["threshold"] == 1e9
    assert result["recipe"]["lr"] == 3e-4 and result["recipe"]["dim"] == 16
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))


def test_strip_and_eval_scripts_on_a_tiny_model(tmp_path):
    recipe = wallpaper_train.Recipe(dim=16, head_dim=8, layers=1, batch=2, probe_batch=2)
    wallpaper_train.train(recipe, str(tmp_path / "m"), 1, log_every=1, log=lambda _: None)
    model = str(tmp_path / "m" / "export")
    png = clone_strip.main(["--model", model, "--out", str(tmp_path / "s.png"), "--examples",
                            "1", "--steps", "2", "--scale", "2"])
    from PIL import Image
    img = np.asarray(Image.open(png))
    # 2 rows (I2V, V2V) of 16 px + gaps, columns of 5 + 1 + 5 + 5 frames (V2V: 5 content)
    assert img.shape[0] == 2 * 2 * (16 + clone_strip.GAP) and img.shape[2] == 3
    result = clone_eval.main(["--model", model, "--no_camera_model", model, "--clips", "1",
                              "--steps", "2", "--paths", "path", "--out", str(tmp_path / "r.json")])
    rows = result["tables"]["path"]
    assert [r["row"] for r in rows if r["task"] == "i2v"] == [
        "ground truth", "copy first frame", "CamClone", "CamClone, camera reference zeroed",
        "no-camera model"]
    assert json.load(open(tmp_path / "r.json"))["tables"]["path"] == json.loads(json.dumps(rows))


SHIPPED_RESULTS = os.path.join(os.path.dirname(BENCH), "docs", "clone_results.json")


@pytest.mark.skipif(not os.path.isdir(wallpaper_eval.SHIPPED), reason="no shipped model")
def test_the_shipped_model_samples_and_scores_as_the_committed_table():
    """The shipped tiny CamClone model loads, samples a 17-frame clip, and its held-out I2V
    camera error on the first clips of the committed table (docs/clone_results.json, same
    clips, seeds and steps) is recomputed within 1 deg/frame, the same clips read within 1."""
    committed = json.load(open(SHIPPED_RESULTS))
    row = next(r for r in committed["tables"]["path"] if r["task"] == "i2v"
               and r["row"] == "CamClone")
    pipe = inference.CamClonePipeline.from_checkpoint(wallpaper_eval.SHIPPED)
    world = wallpaper_train.Recipe.load(wallpaper_eval.SHIPPED).world
    n = 6
    clips = wallpaper_eval.held_out_clips(world, committed["clips"], "path")[:n]
    videos = wallpaper_eval.generate_all(pipe, clips, "i2v", world, steps=committed["steps"])
    assert videos[0].shape == (17, 16, 16, 3) and videos[0].dtype == np.uint8
    scores = wallpaper_eval.score_videos(videos, clips, world)
    expect = [e for e in row["per_clip"][:n] if e is not None]
    assert abs(scores["read"] - len(expect)) <= 1
    if expect and scores["rot_err"] is not None:
        assert abs(scores["rot_err"] - float(np.mean(expect))) < 1.0, (scores, expect)


@pytest.mark.skipif(not os.path.isdir(wallpaper_eval.SHIPPED), reason="no shipped model")
def test_the_sample_cli_clones_the_shipped_example(tmp_path):
    """`python -m camclone_jax.sample --checkpoint <shipped> --camera_ref ... --image ...` out
    of the box, on the shipped example mp4/png: the result's camera is the example target's."""
    from camclone_jax.inference import cli as sample
    from camclone_jax.data.video import read_video

    ex = os.path.join(os.path.dirname(wallpaper_eval.SHIPPED), "..", "examples")
    out = str(tmp_path / "i2v.mp4")
    assert sample.main(["--checkpoint", wallpaper_eval.SHIPPED,
                        "--camera_ref", os.path.join(ex, "camera_ref.mp4"),
                        "--image", os.path.join(ex, "first_frame.png"), "--frames", "17",
                        "--height", "16", "--width", "16", "--steps", "8", "--out", out]) in (0, None)
    video, _ = read_video(out)
    truth, _ = read_video(os.path.join(ex, "target.mp4"))
    assert video.shape == truth.shape == (17, 16, 16, 3)
    got = shift_camera.frame_shifts(video[::4])
    want = shift_camera.frame_shifts(truth[::4])
    assert got is not None and want is not None
    np.testing.assert_array_equal(got, want)


def test_resuming_with_another_recipe_is_refused(tmp_path):
    recipe = wallpaper_train.Recipe(dim=16, head_dim=8, layers=1, batch=2, probe_batch=2)
    work = str(tmp_path / "run")
    wallpaper_train.train(recipe, work, 1, log_every=1, export=False, log=lambda _: None)
    other = wallpaper_train.Recipe(dim=16, head_dim=8, layers=1, batch=2, probe_batch=2, lr=3e-4)
    with pytest.raises(wallpaper_train.ckpt_lib.CheckpointError, match="another recipe"):
        wallpaper_train.train(other, work, 2, log_every=1, export=False, log=lambda _: None)
    assert wallpaper_train.main(["--workdir", work, "--steps", "2", "--lr", "3e-4"]) == 2
