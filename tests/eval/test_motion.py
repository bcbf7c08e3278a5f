"""VBench's Dynamic Degree over DIS optical flow: still and translating videos, VBench's
subsampling / threshold / count rules, and the report column."""
import json

import cv2
import numpy as np
import pytest

from camclone_jax import evaluate
from camclone_jax.data import video
from camclone_jax.eval import motion, report
from tests.eval.test_cli import _pose_file

TOL = 0.12  # |motion - k| <= TOL * k + 0.05: the top 5% of DIS magnitudes overshoot k by ~3-7%


def textured(height, width, seed=0):
    """A smooth, high-contrast random texture uint8 [height, width, 3]."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return np.clip((blurred - blurred.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def translating(k, frames=17, height=64, width=112):
    """uint8 [frames, height, width, 3]: a window sliding right over a texture by k px a frame
    (the content moves left by k px)."""
    canvas = textured(height + 8, width + k * frames + 8)
    return np.stack([canvas[4:4 + height, 4 + k * f:4 + k * f + width] for f in range(frames)])


def test_still_video_is_not_dynamic():
    still = np.repeat(textured(64, 112)[None], 17, axis=0)
    assert np.abs(motion.flow_magnitudes(still)).max() < 1e-3
    out = motion.dynamic_degree(still, fps=16.0)
    assert out == {"dynamic": False, "motion": pytest.approx(0.0, abs=1e-3), "pairs_above": 0}


@pytest.mark.parametrize("k", [1, 3, 6])
def test_translation_by_k_pixels(k):
    frames = translating(k)
    mags = motion.flow_magnitudes(frames)
    assert mags.shape == (16, 64, 112) and mags.dtype == np.float32
    assert np.median(mags) == pytest.approx(k, abs=0.05)
    out = motion.dynamic_degree(frames)  # every frame: threshold 1.5 px, 4 of 16 pairs needed
    assert out["motion"] == pytest.approx(k, abs=TOL * k + 0.05)
    assert out["dynamic"] == (k > motion.motion_threshold(64, 112))
    assert out["pairs_above"] == (16 if out["dynamic"] else 0)


def test_threshold_scales_with_resolution():
    assert motion.motion_threshold(256, 448) == 6.0
    assert motion.motion_threshold(64, 112) == motion.motion_threshold(112, 64) == 1.5
    frames = translating(3, frames=9, height=256, width=448)
    out = motion.dynamic_degree(frames)  # 3 px: dynamic at 64x112, not at a shorter side of 256
    assert out["motion"] == pytest.approx(3, abs=TOL * 3 + 0.05) and not out["dynamic"]
    assert motion.dynamic_degree(translating(3, frames=9))["dynamic"]
    assert motion.dynamic_degree(translating(8, frames=9, height=256, width=448))["dynamic"]


def test_vbench_subsampling_and_count_rules():
    frames = np.arange(17)
    assert list(motion.subsample(frames, 16.0)) == list(range(0, 17, 2))  # round(16 / 8) = 2
    assert list(motion.subsample(frames, 30.0)) == list(range(0, 17, 4))  # round(3.75) = 4
    assert list(motion.subsample(frames, 20.0)) == list(range(0, 17, 2))  # round(2.5) = 2 (even)
    assert len(motion.subsample(frames, 5.0)) == len(motion.subsample(frames, None)) == 17
    assert [motion.pairs_needed(n) for n in (2, 9, 16, 17, 21)] == [0, 2, 4, 4, 5]
    # 16 fps: 9 kept frames, 8 pairs each 2k px apart; 2 of them above threshold suffice
    out = motion.dynamic_degree(translating(1), fps=16.0)
    assert out["motion"] == pytest.approx(2, abs=TOL * 2 + 0.05) and out["pairs_above"] == 8
    assert out["dynamic"]
    half = translating(1)[[0, 0, 0, 0, 0, 0, 0, 1, 2]]  # 9 frames, 2 moving pairs (1 px: below)
    assert motion.dynamic_degree(half)["pairs_above"] == 0
    half = translating(2)[[0, 0, 0, 0, 0, 0, 0, 1, 2]]  # 2 moving pairs above 1.5 px: enough
    assert motion.dynamic_degree(half) == {"dynamic": True, "motion": pytest.approx(0.5, abs=0.1),
                                           "pairs_above": 2}
    assert not motion.dynamic_degree(translating(2)[[0, 0, 0, 0, 0, 0, 0, 0, 1]])["dynamic"]


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        motion.dynamic_degree(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="at least 2 frames after subsampling"):
        motion.dynamic_degree(np.zeros((2, 16, 16, 3), np.uint8), fps=24.0)


def test_report_column_and_flag(tmp_path, capsys):
    gen, cam = tmp_path / "generated", tmp_path / "camera_refs"
    gen.mkdir()
    cam.mkdir()
    c2w = np.repeat(np.eye(4)[None], 17, axis=0)
    intr = np.tile([0.8, 1.4, 0.5, 0.5], (17, 1))
    for name, frames in (("moving", translating(2)), ("still", translating(0))):
        video.write_mp4(str(gen / f"{name}.mp4"), frames, 16.0)
        _pose_file(cam / f"{name}.txt", c2w, intr)
    out = str(tmp_path / "report.json")
    evaluate.main(["--generated", str(gen), "--camera_refs", str(cam), "--out", out, "--no_fvd",
                   "--no_matched_pixels", "--name", "tiny", "--quiet"])
    printed = capsys.readouterr().out
    with open(out) as f:
        saved = json.load(f)
    assert saved["num_evaluated"] == 2, saved["failed"]
    per = {e["name"]: e for e in saved["per_video"]}
    assert per["moving"]["dynamic"] and not per["still"]["dynamic"]
    assert per["moving"]["Motion"] == pytest.approx(4, abs=1.0)  # 16 fps: every 2nd frame
    assert per["still"]["Motion"] < 0.5 and per["still"]["motion_pairs_above"] == 0
    assert saved["summary"]["DynDeg"] == 50.0
    assert saved["summary"]["Motion"] == pytest.approx((per["moving"]["Motion"] + per["still"]["Motion"]) / 2)
    assert "DIS" in saved["settings"]["dynamic_degree"]
    header, _, row = printed.splitlines()[:3]
    assert "Dyn. Deg. ↑" in header and "| tiny |" in row and "50.00" in row
    args, options = evaluate.parse_args(["--generated", str(gen), "--camera_refs", str(cam),
                                         "--out", out, "--no_dynamic_degree"])
    assert not options.dynamic_degree and report.EvalOptions().dynamic_degree
    table = report.markdown_table([dict(saved, summary={"RotErr": 1.0})])
    assert "Dyn. Deg." not in table  # the column appears only when some report has it



def test_rendered_clips(clips):
    """The shared rendered clips (21 frames, 128x224, 15 fps; threshold 3 px): camera moves are
    dynamic; with a still camera only the animated subject moves (the background's flow is ~0)."""
    results = {name: motion.dynamic_degree(clips[name][0], fps=15.0)
               for name in ("pan", "truck", "static")}
    assert results["pan"]["dynamic"] and results["truck"]["dynamic"]
    assert results["static"]["motion"] < min(results["pan"]["motion"], results["truck"]["motion"])
    static = motion.flow_magnitudes(motion.subsample(clips["static"][0], 15.0))  # [10, 128, 224]
    pan = motion.flow_magnitudes(motion.subsample(clips["pan"][0], 15.0))
    assert np.median(static) < 0.1 and np.median(pan) > 2
