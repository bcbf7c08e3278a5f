"""Wallpaper-world models sampled and scored (inference/clone.py), the benchmark scripts that
make docs/results.md's tables and strip, and the shipped tiny models against their committed
figures."""
import json
import os
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from camclone_jax import inference
from camclone_jax.data import wallpaper
from camclone_jax.data.video import read_video
from camclone_jax.eval import clone as clone_eval
from camclone_jax.eval import shift_camera
from camclone_jax.inference import clone as clone_lib
from camclone_jax.inference import cli as sample
from camclone_jax.models import DiTConfig
from camclone_jax.models import params as params_lib
from camclone_jax.training import checkpoint as ckpt_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import clone_eval as clone_eval_script  # noqa: E402
import clone_strip  # noqa: E402

WORLD = wallpaper.WallpaperWorld()
SHIPPED_RESULTS = os.path.join(REPO, "docs", "clone_results.json")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 1-layer wallpaper-world model export (what a clone_tiny run writes)."""
    c = WORLD.codec.latent_channels
    cfg = DiTConfig(dim=16, ffn_dim=32, num_layers=1, num_heads=2, in_channels=2 * c + 4,
                    out_channels=c, text_dim=8, freq_dim=16, patch_size=(1, 1, 1),
                    prediction="sample")
    out = str(tmp_path_factory.mktemp("tiny") / "export")
    ckpt_lib.export_model(out, cfg, jax.device_get(params_lib.init_params(cfg, 0)),
                          extra_files={"codec.json": WORLD.codec.to_dict(),
                                       "text.json": {"kind": "none", "text_len": 1,
                                                     "text_dim": 8},
                                       clone_lib.WORLD_FILE: WORLD.to_dict()})
    return out


def test_rows_video_and_scripts_on_a_tiny_model(tiny_model, tmp_path):
    assert clone_lib.load_world(tiny_model) == WORLD
    pipe = inference.CamClonePipeline.from_checkpoint(tiny_model)
    clips = clone_eval.held_out_clips(WORLD, 1)
    rows = clone_lib.evaluate({"tiny": pipe}, clips, WORLD, steps=2, log=lambda _: None)
    assert [(r["task"], r["row"]) for r in rows] == [
        (task, row) for task in ("i2v", "v2v") for row in (
            "ground truth", "copy first frame", "tiny", "tiny, camera reference zeroed")]
    assert "| I2V | ground truth | 0.00 | 1/1 | inf |" in clone_eval.markdown(rows)
    shown = clone_lib.demo_video(str(tmp_path / "v.mp4"), pipe, clips[0], "v2v", WORLD,
                                 steps=2, scale=2)
    frames, _ = read_video(shown["path"])
    assert frames.shape == (17, 12 + 32, 4 * 32, 3) and np.isfinite(shown["psnr"])

    png = clone_strip.main(["--model", tiny_model, "--out", str(tmp_path / "s.png"),
                            "--examples", "1", "--steps", "2", "--scale", "2"])
    img = np.asarray(Image.open(png))
    # 2 rows (I2V, V2V) of 16 px + gaps, columns of 5 + 1 + 5 + 5 frames (V2V: 5 content)
    assert img.shape[0] == 2 * 2 * (16 + clone_strip.GAP) and img.shape[2] == 3
    result = clone_eval_script.main(["--model", tiny_model, "--no_camera_model", tiny_model,
                                     "--clips", "1", "--steps", "2", "--paths", "path",
                                     "--out", str(tmp_path / "r.json")])
    rows = result["tables"]["path"]
    assert [r["row"] for r in rows if r["task"] == "i2v"] == [
        "ground truth", "copy first frame", "CamClone", "CamClone, camera reference zeroed",
        "no-camera model"]
    assert json.load(open(tmp_path / "r.json"))["tables"]["path"] == json.loads(json.dumps(rows))


def test_a_model_without_a_world_is_named():
    with pytest.raises(FileNotFoundError, match="not a wallpaper-world model"):
        clone_lib.load_world(REPO)


@pytest.mark.skipif(not os.path.isdir(clone_lib.SHIPPED), reason="no shipped model")
def test_the_shipped_model_samples_and_scores_as_the_committed_table():
    """The shipped tiny CamClone model loads, samples a 17-frame clip, and its held-out I2V
    camera error on the first clips of the committed table (docs/clone_results.json, same
    clips, seeds and steps) is recomputed within 1 deg/frame, the same clips read within 1."""
    committed = json.load(open(SHIPPED_RESULTS))
    row = next(r for r in committed["tables"]["path"] if r["task"] == "i2v"
               and r["row"] == "CamClone")
    pipe = inference.CamClonePipeline.from_checkpoint(clone_lib.SHIPPED)
    world = clone_lib.load_world(clone_lib.SHIPPED)
    n = 6
    clips = clone_eval.held_out_clips(world, committed["clips"], "path")[:n]
    videos = clone_lib.generate_all(pipe, clips, "i2v", steps=committed["steps"])
    assert videos[0].shape == (17, 16, 16, 3) and videos[0].dtype == np.uint8
    scores = clone_eval.score_videos(videos, clips, world)
    expect = [e for e in row["per_clip"][:n] if e is not None]
    assert abs(scores["read"] - len(expect)) <= 1
    if expect and scores["rot_err"] is not None:
        assert abs(scores["rot_err"] - float(np.mean(expect))) < 1.0, (scores, expect)


@pytest.mark.skipif(not os.path.isdir(clone_lib.SHIPPED), reason="no shipped model")
def test_the_sample_cli_clones_the_shipped_example(tmp_path):
    """`python -m camclone_jax.sample --checkpoint <shipped> --camera_ref ... --image ...` out
    of the box, on the shipped example mp4/png: the result's camera is the example target's."""
    ex = os.path.join(os.path.dirname(clone_lib.SHIPPED), "..", "examples")
    out = str(tmp_path / "i2v.mp4")
    assert sample.main(["--checkpoint", clone_lib.SHIPPED,
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
