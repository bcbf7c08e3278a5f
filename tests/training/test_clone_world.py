"""configs/clone_tiny.py and the demo through the one trainer (`python -m camclone_jax.train`):
the wallpaper world at its real size trains, resumes exactly, logs the reference-use gaps,
exports a model whose clone videos and closing camera scores are written (the gaps themselves:
tests/training/test_step.py)."""
import json
import os
import sys

import numpy as np
import pytest

from camclone_jax.convert.transformer import load_transformer
from camclone_jax.data.video import read_video
from camclone_jax.inference import clone as clone_lib
from camclone_jax.training import loop as train
from camclone_jax.training.run_config import override, sibling_config
from camclone_jax.utils import flatten_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import time_to_clone  # noqa: E402
CONFIG = os.path.join(REPO, "configs", "clone_tiny.py")


def clone_config(steps, arg="", **overrides):
    """configs/clone_tiny.py[:arg] at its real size, ``steps`` steps, small held-out checks."""
    config = sibling_config(CONFIG, "clone_tiny", arg)
    config.update(total_steps=steps, log_every=1, eval_every=steps, eval_batches=1)
    config.checkpoint.update(every=2, keep=5)
    config.sample.steps = 2
    config.clone_check.update(clips=2, steps=2)
    return override(config, overrides)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 uninterrupted steps of the clone recipe, with its closing videos and check."""
    work = str(tmp_path_factory.mktemp("clone"))
    return work, train.train_and_evaluate(clone_config(4), work)


def test_the_clone_recipe_trains_logs_its_gaps_and_shows_its_clone(straight):
    work, result = straight
    assert result["status"] == "done" and result["step"] == 4
    gaps = result["val_gaps"]
    assert set(gaps) == {0, 4} and set(gaps[4]) == {
        "val_camera_gap", "val_camera_gap_i2v", "val_camera_gap_v2v", "val_content_gap"}
    logged = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
    assert any("val_camera_gap" in m and m["step"] == 4 for m in logged)
    # the export knows its world; its samples: camera | first frame or content | result | truth
    assert clone_lib.load_world(os.path.join(work, "export")).cells == (4, 4)
    for task in ("i2v", "v2v"):
        frames, _ = read_video(result["sample"][task]["path"])
        assert frames.shape == (17, 12 + 16 * 8, 4 * 16 * 8, 3)  # labelled, 8x upscaled
    assert {"ground truth", "copy first frame", "CamClone", "CamClone, camera reference zeroed",
            "no-camera model"} == set(result["clone_check"])
    assert result["clone_check"]["ground truth"] == 0.0
    assert any(line.startswith("camera cloning by the model just trained")
               for line in result["clone_check_lines"])


def test_resume_is_exact(straight, tmp_path):
    ref_dir, ref = straight
    quiet = {"sample.enabled": False, "clone_check.enabled": False, "eval_every": 0}
    first = train.train_and_evaluate(clone_config(2, **quiet), str(tmp_path))
    second = train.train_and_evaluate(clone_config(4, **quiet), str(tmp_path))
    assert second["start_step"] == 2
    assert first["batch_indices"] + second["batch_indices"] == ref["batch_indices"]
    assert first["losses"] + second["losses"] == ref["losses"]  # bit-identical, one process
    a = flatten_params(load_transformer(os.path.join(tmp_path, "export"))[1])
    b = flatten_params(load_transformer(os.path.join(ref_dir, "export"))[1])
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_time_to_clone_runs_the_main_trainer(tmp_path):
    out = tmp_path / "ttc.jsonl"
    result = time_to_clone.main([
        "--max_steps", "2", "--every", "2", "--threshold", "1e9", "--out", str(out),
        "--set", "model.num_layers=1", "--set", "model.dim=16", "--set", "model.ffn_dim=32",
        "--set", "model.num_heads=1", "--set", "eval_batches=1"])
    assert result["steps"] == 2 and not result["reached"] and result["wall_s"] > 0
    assert np.isfinite(result["gap"]) and result["threshold"] == 1e9
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    with pytest.raises(SystemExit, match="not a config key"):
        time_to_clone.load("clone_tiny", ["optim.lrr=1"])
