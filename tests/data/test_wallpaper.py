"""The wallpaper world (data/wallpaper.py), its camera reading (eval/shift_camera.py) and the
held-out clips and scores of eval/clone.py, at a tiny size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax.data import wallpaper
from camclone_jax.eval import clone as clone_eval
from camclone_jax.eval import shift_camera

WORLD = wallpaper.WallpaperWorld()

def test_translation_is_exact_for_whole_pixels():
    spec = wallpaper.smooth_spectra(jax.random.key(0), 1, 8, 12, blur=1.0)  # [1, 8, 12, 3]
    shifts = jnp.array([[[0.0, 0.0], [2.0, -3.0]]])  # [1, 2 frames, (dy, dx)]
    frames = np.asarray(wallpaper.translated_spectra(spec, shifts))  # [1, 2, 8, 12, 3]
    np.testing.assert_allclose(frames[0, 1], np.roll(frames[0, 0], (2, -3), (0, 1)), atol=1e-5)
    np.testing.assert_allclose(frames[0, 0].std(), 1.0, rtol=1e-4)


def test_rendered_clips_encode_to_the_training_latents():
    """The pixel clip the CLI reads (every frame) encodes, through the pixel codec, to the
    wallpaper rolled in latent space (to uint8 rounding)."""
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
    clips = clone_eval.held_out_clips(WORLD, 12, paths)
    scores = clone_eval.score_videos([c.target for c in clips], clips, WORLD)
    assert scores == {"rot_err": 0.0, "psnr": float("inf"), "read": 12, "clips": 12,
                      "per_clip": [0.0] * 12}
    static = [np.repeat(c.first_frame[None], 17, 0) for c in clips]
    assert clone_eval.score_videos(static, clips, WORLD)["rot_err"] > 10
    if paths == "path":  # the camera turns within a clip
        assert any(len({tuple(s) for s in c.steps_cells}) > 1 for c in clips)


def test_shift_reading_fails_on_frames_without_a_shift_and_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 16, 16, 3), np.uint8)  # unrelated frames
    assert shift_camera.estimate(noise, WORLD.focal_px) is None
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        shift_camera.frame_shifts(noise[..., 0])
