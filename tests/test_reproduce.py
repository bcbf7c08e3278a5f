"""benchmarks/reproduce_eval.py, the reproduction's evaluation, on a tiny trained model: every
model folder sampled I2V and V2V, scored against the true poses next to the baselines."""

import dataclasses
import importlib.util
import json
import os

import pytest

from camclone_jax.data.synthetic.writer import GeneratorConfig, generate_dataset
from camclone_jax.training import loop as train
from tests.training.test_train import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    path = os.path.join(REPO, "benchmarks", "reproduce_eval.py")
    spec = importlib.util.spec_from_file_location("reproduce_eval", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("heldout"))
    generate_dataset(out, GeneratorConfig(num_groups=1, frames=9, height=48, width=80,
                                          seed=1000, preview_triplets=0), progress=False)
    return out


def test_reproduce_eval_scores_every_model_and_baseline(split, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = tiny_config(os.path.join(split, "records"), 2)
    config.data.update(height=48, width=80)
    train.train_and_evaluate(config, str(run / "camclone"))
    os.makedirs(run / "nocam")
    os.symlink(run / "camclone" / "export", run / "nocam" / "export")  # sampled camera-less
    script = load_script()
    score = script.score  # I3D features (FVD) of 32 x 32 clips, pooled, as tests/eval's: not
    # the standard 224 x 224 logits, 6 s of CPU per video and the test's main cost otherwise
    monkeypatch.setattr(script, "score", lambda folder, poses, options, name: score(
        folder, poses, dataclasses.replace(options, i3d_endpoint="pool", i3d_size=32,
                                           i3d_frames=8), name))
    rows = script.main(["--run", str(run), "--split", split, "--max_triplets", "2",
                        "--steps", "2"])
    got = {(r["model"], r["task"]) for r in rows}
    assert {("camclone", "i2v"), ("camclone", "v2v"), ("nocam", "i2v"), ("nocam", "v2v"),
            (None, "v2v"), (None, "i2v"), (None, "both")} == got
    for r in rows:
        assert r["num_pairs"] == 2 and r["num_evaluated"] + r["num_failed"] == 2
        if r["model"]:
            assert len(r["psnr_per_video"]) == 2 and 0 < r["psnr"] < 100
    videos = sorted((run / "eval" / "camclone" / "v2v").iterdir())
    assert [v.name for v in videos] == ["00000.mp4", "00001.mp4"]
    report = json.loads((run / "results.json").read_text())
    assert report["triplets"] == 2 and len(report["rows"]) == len(rows)
    probes = report["reference_use"]  # x-hat error with true / zeroed references, per model
    assert set(probes) == {"CamClone (frame concat, 3D attention)", "no camera reference"}
    for p in probes.values():
        assert set(p) == {"true", "no_camera", "no_content", "variance"} and p["variance"] > 0
    nocam = probes["no camera reference"]
    assert nocam["true"] == nocam["no_camera"]  # its camera latent is zero either way
    table = (run / "results.md").read_text()
    assert "| no camera reference | V2V |" in table and "| copy content | V2V |" in table
    mtime = videos[0].stat().st_mtime
    script.main(["--run", str(run), "--split", split, "--max_triplets", "2", "--steps", "2"])
    assert videos[0].stat().st_mtime == mtime  # re-running reuses the written videos
