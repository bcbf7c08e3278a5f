"""The procedural wallpaper source (data/wallpaper_source.py) and its Grain pipeline: examples
are functions of (seed, index), move target and camera reference together, follow the
curriculum, encode like the pixel codec, and slice over processes like records."""
import numpy as np
import pytest

from camclone_jax.data import pipeline, wallpaper
from camclone_jax.data.transforms import ClipConfig
from camclone_jax.data.wallpaper_source import (Curriculum, WallpaperSource, in_first_view,
                                                latent_clip, wallpaper_np)

WORLD = wallpaper.WallpaperWorld()


def test_examples_are_functions_of_seed_and_index():
    a, b = WallpaperSource(WORLD, seed=3, length=100), WallpaperSource(WORLD, seed=3, length=100)
    for i in (0, 7, 99):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert not np.array_equal(a[0]["target"], a[1]["target"])
    assert not np.array_equal(a[0]["target"], WallpaperSource(WORLD, seed=4, length=1)[0]["target"])
    with pytest.raises(IndexError, match="outside"):
        a[100]


def test_target_and_camera_reference_move_together_and_v2v_shares_frame_0():
    src = WallpaperSource(WORLD, seed=0, length=40, paths="mixed")
    tasks = set()
    for i in range(40):
        ex = src[i]
        t, c = ex["target"], ex["camera_ref"]
        assert t.shape == c.shape == ex["content_ref"].shape == (5, 4, 4, 48)
        assert ex["first_frame"].shape == (16, 16, 3) and ex["first_frame"].dtype == np.float32
        np.testing.assert_array_equal(ex["content_ref"][0], t[0])  # V2V: the same frame 0
        np.testing.assert_array_equal(ex["i2v_latents"][0], t[0])
        assert not ex["i2v_latents"][1:].any()
        assert not np.array_equal(t, c)  # another scene (no curriculum here)
        # the same per-step cell shifts in both: frame k+1 is frame k rolled by one velocity
        for k in range(4):
            moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                     if np.array_equal(np.roll(t[k], (dy, dx), (0, 1)), t[k + 1])]
            assert moves and all(np.array_equal(np.roll(c[k], m, (0, 1)), c[k + 1])
                                 for m in moves[:1])
        tasks.add(int(ex["task"]))
    assert tasks == {0, 1}


def test_latents_are_the_pixel_codec_of_the_rendered_clip():
    """What training reads equals what the sampler's codec makes of the pixel video."""
    wall = wallpaper_np(np.random.default_rng(0), WORLD)  # [16, 16, 3]
    steps = np.array([[1, -1], [0, 1], [1, 1], [-1, 0]])
    clip = wallpaper.render_clip(wall, WORLD, steps)  # uint8 [17, 16, 16, 3]
    encoded = np.asarray(WORLD.codec.encode(clip[None].astype(np.float32) / 127.5 - 1.0))[0]
    np.testing.assert_allclose(latent_clip(wall, WORLD, steps), encoded, atol=2 * 2.0 / 255)


def test_the_curriculum_decays_with_the_global_step():
    cur = Curriculum(same_scene=1.0, same_scene_steps=10, examples_per_step=4)
    assert cur.at(0) == 1.0 and cur.at(5) == 0.5 and cur.at(10) == cur.at(50) == 0.0
    src = WallpaperSource(WORLD, seed=0, length=200, curriculum=cur)
    same = [np.array_equal(src[i]["target"], src[i]["camera_ref"]) for i in range(200)]
    assert all(same[:4])  # step 0: always the target's own scene
    assert not any(same[40:])  # from step 10 on: never


def _batches(cfg_kwargs, n):
    src = WallpaperSource(WORLD, seed=1, length=1000, paths="mixed")
    clip = ClipConfig(kind="latent", num_frames=17, height=16, width=16)
    loader = pipeline.make_loader(src, pipeline.PipelineConfig(clip=clip, num_workers=0,
                                                               **cfg_kwargs))
    return loader, [next(loader) for _ in range(n)]


def test_two_processes_slice_the_stream_as_one_and_the_state_resumes():
    _, one = _batches(dict(batch_size=4, process_index=0, process_count=1), 3)
    _, p0 = _batches(dict(batch_size=2, process_index=0, process_count=2), 3)
    _, p1 = _batches(dict(batch_size=2, process_index=1, process_count=2), 3)
    for whole, a, b in zip(one, p0, p1):
        assert whole["index"].tolist() == a["index"].tolist() + b["index"].tolist()
        np.testing.assert_array_equal(whole["target"], np.concatenate([a["target"], b["target"]]))
    assert [b["index"].tolist() for b in one] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    loader, first = _batches(dict(batch_size=4), 2)
    state = loader.get_state()
    after = next(loader)
    restored, _ = _batches(dict(batch_size=4), 0)
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["camera_ref"], after["camera_ref"])


def test_a_scene_larger_than_the_view_brings_new_content_in():
    """scene_scale 2: the camera sees the top-left 16x16 view of a 32x32 wallpaper, so a move
    of one cell keeps the rest of the view (shifted) and brings in a row or column that frame 0
    did not show; the other renderers, which wrap the view, refuse such a world."""
    world = wallpaper.WallpaperWorld(scene_scale=2)
    ex = WallpaperSource(world, seed=0, length=4)[0]
    t = ex["target"]  # [5, 4, 4, 48]
    assert t.shape == (5, 4, 4, 48) and ex["first_frame"].shape == (16, 16, 3)
    np.testing.assert_allclose(WORLD.codec.encode(ex["first_frame"][None, None])[0, 0], t[0],
                               atol=1e-6)
    wall = wallpaper_np(np.random.default_rng(1), world)  # [32, 32, 3]
    assert wall.shape == (32, 32, 3)
    z = latent_clip(wall, world, np.array([[0, 1]] * 4))  # [5, 4, 4, 48] panning 1 cell a step
    np.testing.assert_array_equal(z[1][:, 1:], z[0][:, :-1])  # the view moved by one cell
    assert not any(np.array_equal(z[1][:, 0], z[0][:, j]) for j in range(4))  # a new column
    with pytest.raises(ValueError, match="scene_scale 2"):
        wallpaper.render_clip(wall, world, [0, 1])
    with pytest.raises(ValueError, match="scene_scale must be >= 1"):
        wallpaper.WallpaperWorld(scene_scale=0)


def test_in_first_view_marks_exactly_the_pixels_frame_0_showed():
    """The source's in_first_view [f, h, w] is, per token, the fraction of its pixels whose
    scene pixel frame 0 showed: checked against the rendered clip of a wallpaper whose every
    pixel is distinct, for half-cell moves up, left and diagonally; ones when the view wraps."""
    world = wallpaper.WallpaperWorld(cells=(4, 4), cell_px=8, step_px=4, scene_scale=2)
    sh, sw = world.scene_size
    ids = np.arange(sh * sw, dtype=np.float32).reshape(sh, sw)  # a distinct value a pixel
    wall = np.repeat(ids[..., None], 3, axis=-1)  # [32 * 2, 32 * 2, 3]
    s, (h, w) = world.cell_px, world.size
    for v in ([1, 1], [-1, 0], [0, -1], [1, -1]):
        steps = np.array([v] * 4)  # [4, 2] half a cell each latent frame
        z = latent_clip(wall, world, steps) / world.codec.scale  # [5, 4, 4, 192]
        px = z.reshape(5, h // s, w // s, s, s, 3).transpose(0, 1, 3, 2, 4, 5)
        px = px.reshape(5, h, w, 3)[..., 0]  # [5, 32, 32] the scene pixel each view pixel shows
        seen = np.isin(px, px[0]).reshape(5, h // s, s, w // s, s).mean((2, 4))  # [5, 4, 4]
        got = in_first_view(world, steps)  # [5, 4, 4]
        np.testing.assert_allclose(got, seen)
        assert got[0].min() == 1.0 and got[-1].mean() < 0.8  # new content came in
    ex = WallpaperSource(world, seed=0, length=2)[1]
    assert ex["in_first_view"].shape == (5, 4, 4) and ex["in_first_view"].dtype == np.float32
    np.testing.assert_array_equal(in_first_view(WORLD, np.array([[1, -1]] * 4)), 1.0)

