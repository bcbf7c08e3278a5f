"""Two processes x 4 CPU devices (launch/local.sh) train like one process x 8 devices, and their
checkpoint resumes in one process on another mesh."""

import json
import os
import subprocess

import numpy as np

from camclone_jax.training import loop as train
from camclone_jax.training.run_config import override, sibling_config
from tests.training.test_train import REPO, records, tiny_config, trained_params  # noqa: F401 (fixture)

OVERRIDES = {"model.dim": 32, "model.ffn_dim": 64, "model.num_layers": 2, "model.num_heads": 2,
             "model.text_dim": 16, "model.freq_dim": 32, "model.prediction": "velocity",
             "data.kind": "mp4", "data.frames": 9,
             "data.height": 32, "data.width": 48, "data.num_workers": 0, "data.text_len": 4,
             "clone_check.enabled": False,
             "batch_size": 8, "mesh_devices": 0, "checkpoint.every": 3, "log_every": 1,
             "eval_every": 0, "sample.enabled": False, "optim.lr": 1e-5, "optim.warmup_steps": 0,
             "optim.schedule": "constant",  # the lr must not depend on total_steps
             "optim.rules": (("self_attn", "train"), (".*", None))}


def test_two_processes_match_one_and_resume_on_another_mesh(records, tmp_path):
    two = tmp_path / "two"
    args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    cmd = ["bash", "launch/local.sh", "-n", "2", "-d", "4", "--", "--config=configs/synthetic_tiny.py",
           f"--workdir={two}", f"--config.data.path={records}", "--config.total_steps=3"] + args
    env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")  # local.sh adds the
    # device count to conftest's quicker CPU compiles
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "[process 1]" in out.stdout + out.stderr

    # One process, 8 devices (this test process), the same config: 5 steps.
    ref = train.train_and_evaluate(tiny_config(records, 5, **OVERRIDES), str(tmp_path / "one"))
    logged = [json.loads(line) for line in open(two / "metrics.jsonl")]
    np.testing.assert_allclose([m["loss"] for m in logged], [x for _, x in ref["losses"][:3]],
                               rtol=1e-5)

    # The 2-process checkpoint (step 3) resumes here on a different mesh, with the same data.
    resumed = train.train_and_evaluate(
        tiny_config(records, 5, **{**OVERRIDES, "mesh": {"data": 2, "fsdp": 4}}), str(two))
    assert resumed["start_step"] == 3 and resumed["step"] == 5
    np.testing.assert_allclose([x for _, x in resumed["losses"]], [x for _, x in ref["losses"][3:]],
                               rtol=1e-5)
    a, b = trained_params(two), trained_params(tmp_path / "one")
    # Adam's early steps move each weight by about lr = 1e-5 whatever the gradient's size.
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in b) < 1e-6


CLONE = {"model.dim": 16, "model.ffn_dim": 32, "model.num_layers": 1, "model.num_heads": 1,
         "batch_size": 4, "log_every": 1, "eval_every": 0, "checkpoint.every": 3,
         "sample.enabled": False, "clone_check.enabled": False, "mesh_devices": 0}


def test_two_processes_over_the_procedural_source_match_one(tmp_path):
    """configs/clone_tiny.py (the procedural wallpaper source, no files): 2 processes x 1
    device see the examples 1 process x 2 devices sees, so their losses agree."""
    two = tmp_path / "two"
    cmd = ["bash", "launch/local.sh", "-n", "2", "-d", "1", "--",
           "--config=configs/clone_tiny.py", f"--workdir={two}", "--config.total_steps=3"]
    cmd += [f"--config.{k}={v}" for k, v in CLONE.items()]
    env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    config = sibling_config(os.path.join(REPO, "configs", "clone_tiny.py"), "clone_tiny")
    override(config, {**CLONE, "mesh_devices": 2, "total_steps": 3})
    ref = train.train_and_evaluate(config, str(tmp_path / "one"))
    logged = [json.loads(line) for line in open(two / "metrics.jsonl") if '"loss"' in line]
    np.testing.assert_allclose([m["loss"] for m in logged], [x for _, x in ref["losses"]],
                               rtol=1e-5)
