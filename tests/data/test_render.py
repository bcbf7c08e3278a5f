"""Tests of the procedural scenes and the JAX ray caster.

Every render here is 3 frames at 64x112, so the renderer compiles once for the whole file.
"""
import math

import numpy as np
import pytest

from camclone_jax.data.synthetic import render as R
from camclone_jax.data.synthetic import scene as S
from camclone_jax.data.synthetic import trajectories as T

H, W, N = 64, 112, 3
ASPECT = W / H


def _scene(seed, kind="outdoor_field", palette="day"):
    return S.make_scene(np.random.default_rng(seed), N, 15.0, kind=kind, palette=palette)


def _render(scene, c2w, intr, times=(0, 0, 0)):
    """Renders location-frame cameras c2w [N, 4, 4] (placed in the world by the scene's anchor)."""
    world = scene.anchor[None] @ np.asarray(c2w, np.float64)  # [N, 4, 4]
    return R.render(scene.arrays, world, np.asarray(intr), np.asarray(times), H, W)


def _gray(img):
    return img.astype(np.float64) @ [0.299, 0.587, 0.114]


def phase_correlation(a, b):
    """(dy, dx) in pixels by which the content of image b is displaced relative to image a."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    cross = fb * np.conj(fa)
    corr = np.real(np.fft.ifft2(cross / (np.abs(cross) + 1e-9)))
    py, px = np.unravel_index(np.argmax(corr), corr.shape)
    def refine(c_m, c_0, c_p):  # parabola through the peak and its neighbours
        den = c_m - 2 * c_0 + c_p
        return 0.0 if den == 0 else 0.5 * (c_m - c_p) / den
    dy = py + refine(corr[py - 1, px], corr[py, px], corr[(py + 1) % a.shape[0], px])
    dx = px + refine(corr[py, px - 1], corr[py, px], corr[py, (px + 1) % a.shape[1]])
    return ((dy + a.shape[0] / 2) % a.shape[0] - a.shape[0] / 2,
            (dx + a.shape[1] / 2) % a.shape[1] - a.shape[1] / 2)


def test_rendering_is_deterministic_per_seed():
    traj = T.build_trajectory("orbit", {"start": {"radius": 4.5, "azimuth_deg": 20, "pitch_deg": 15,
                                                  "target": [0, -1, 0]}, "focal_mm": 24.0,
                                        "angle_deg": 30.0, "pivot_distance_m": 4.5,
                                        "elevation_deg": 5.0, "roll_deg": 0.0}, N, ASPECT)
    a, b = _scene(7, "indoor_room", "night"), _scene(7, "indoor_room", "night")
    c = _scene(8, "indoor_room", "night")
    assert a.caption == b.caption
    fa, ia = _render(a, traj.c2w, traj.intrinsics, (0, 1, 2))
    fb, ib = _render(b, traj.c2w, traj.intrinsics, (0, 1, 2))
    fc, _ = _render(c, traj.c2w, traj.intrinsics, (0, 1, 2))
    assert fa.shape == (N, H, W, 3) and fa.dtype == np.uint8
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ia, ib)
    assert np.abs(fa.astype(int) - fc).mean() > 5  # another seed is another scene
    assert fa.std() > 20  # textured, not a flat image
    assert len(np.unique(ia)) > 8  # many primitives in view


def test_pan_right_moves_image_content_left():
    scene = _scene(3)
    start = {"radius": 4.5, "azimuth_deg": 40.0, "pitch_deg": 15.0, "target": [0.0, -1.0, 0.0]}
    angle = 4.0
    pan = T.build_trajectory("pan", {"start": start, "focal_mm": 35.0, "angle_deg": angle}, 2, ASPECT)
    tilt = T.build_trajectory("tilt", {"start": start, "focal_mm": 35.0, "angle_deg": angle}, 2, ASPECT)
    c2w = np.stack([pan.c2w[0], pan.c2w[1], tilt.c2w[1]])  # same instant: the subject holds still
    frames, _ = _render(scene, c2w, pan.intrinsics[[0, 1, 1]])
    expected = pan.intrinsics[0, 0] * W * math.tan(math.radians(angle))  # fx * tan(angle), ~7.6 px
    dy, dx = phase_correlation(_gray(frames[0]), _gray(frames[1]))
    assert -1.2 * expected < dx < -0.9 * expected, (dx, expected)
    assert abs(dy) < 1.0
    dy, dx = phase_correlation(_gray(frames[0]), _gray(frames[2]))  # tilt up: content moves down
    expected_y = pan.intrinsics[0, 1] * H * math.tan(math.radians(angle))
    assert 0.9 * expected_y < dy < 1.2 * expected_y, (dy, expected_y)
    assert abs(dx) < 1.0


def test_dolly_in_enlarges_a_centred_object():
    b = S.SceneBuilder()
    b.add_plane((0, -1, 0), 0.0, (0.3, 0.5, 0.3), (0.2, 0.3, 0.2), "checker", 1.0)
    centre = (0.0, -1.0, 0.0)
    b.add_sphere(centre, 0.5, S.COLORS["red"], S.COLORS["yellow"], "stripes", 0.2)
    scene = S.Scene(b.build(S.make_lights("day", "outdoor_field", np.random.default_rng(0)),
                            num_times=N), np.eye(4), {}, "")
    start = {"radius": 6.0, "azimuth_deg": 0.0, "pitch_deg": 0.0, "target": list(centre)}
    dolly = T.build_trajectory("dolly", {"start": start, "focal_mm": 35.0, "distance_m": 2.0}, N, ASPECT)
    _, ids = _render(scene, dolly.c2w, dolly.intrinsics)
    sphere_id = S.MAX_PLANES + S.MAX_BOXES  # the first static sphere
    masks = ids == sphere_id  # [N, H, W]
    widths = [np.ptp(np.flatnonzero(m.any(0))) + 1 for m in masks]
    areas = masks.sum((1, 2))
    assert widths[0] < widths[1] < widths[2]
    # distance 6 m -> 4 m: the width grows 1.5x (and the area 2.25x)
    assert 1.35 < widths[2] / widths[0] < 1.65, widths
    assert 2.0 < areas[2] / areas[0] < 2.5, areas
    for m in masks:  # it stays centred
        ys, xs = np.nonzero(m)
        assert abs(xs.mean() - (W - 1) / 2) < 1.0 and abs(ys.mean() - (H - 1) / 2) < 1.0


def test_scene_kinds_palettes_and_captions():
    for kind in S.KINDS:
        for palette in S.PALETTES:
            sc = _scene(11, kind, palette)
            assert sc.description["kind"] == kind and sc.description["palette"] == palette
            assert ("daylight" if palette == "day" else "at night") in sc.caption
            assert ("indoor" in sc.caption) == (kind == "indoor_room")
            assert sc.arrays["subject_center"].shape == (N, 12, 3)
            assert sc.arrays["color_a"].shape == (S.NUM_PRIMITIVES, 3)
            assert 8 <= len(sc.description["objects"])
    with pytest.raises(ValueError, match="kind"):
        S.make_scene(np.random.default_rng(0), N, 15.0, kind="underwater")


def test_render_rejects_bad_inputs():
    scene = _scene(1)
    c2w, intr = np.tile(np.eye(4), (N, 1, 1)), np.tile([1.0, 1.75, 0.5, 0.5], (N, 1))
    with pytest.raises(ValueError, match="intrinsics"):
        R.render(scene.arrays, c2w, intr[:2], np.zeros(N, int), H, W)
    with pytest.raises(ValueError, match="times"):
        R.render(scene.arrays, c2w, intr, np.array([0, 1, 5]), H, W)
