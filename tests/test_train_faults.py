"""Faults during a training run, met at the command line: a second job on a locked workdir,
a corrupt newest checkpoint, a checkpoint save that fails, a corrupt ArrayRecord chunk."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from camclone_jax import train, workdir_lock
from tests.test_train import REPO, records, tiny_config  # noqa: F401 (fixture)

TINY = {"model.dim": 32, "model.ffn_dim": 64, "model.num_layers": 2, "model.num_heads": 2,
        "model.text_dim": 16, "model.freq_dim": 32, "model.prediction": "velocity",
        "data.kind": "mp4", "data.frames": 9, "data.height": 32, "data.width": 48,
        "data.num_workers": 0, "data.text_len": 4, "batch_size": 2, "checkpoint.every": 2,
        "log_every": 1, "eval_every": 0, "sample.enabled": False,
        "optim.schedule": "constant", "optim.rules": (("self_attn", "train"), (".*", None))}


def run_cli(workdir, data, total_steps=2, timeout=240, **overrides):
    """`python -m camclone_jax.train` on the tiny config of tests/test_train.py."""
    args = [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]
    cmd = [sys.executable, "-m", "camclone_jax.train", "--config=configs/demo.py",
           f"--workdir={workdir}", f"--config.data.path={data}",
           f"--config.total_steps={total_steps}"] + args
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_lock(workdir, pid):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lock.LOCK_FILE), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": pid,
                   "pid_start": workdir_lock._start_time(pid), "since": time.time(),
                   "command": "python -m camclone_jax.train (the first job)"}, f)


# ------------------------------------------------------------------------------ the lock
def test_a_second_trainer_on_a_locked_workdir_exits_2_naming_the_holder(records, tmp_path):
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        write_lock(tmp_path, first.pid)
        out = run_cli(tmp_path, records)
        assert out.returncode == 2, out.stderr[-3000:]
        last = out.stderr.strip().splitlines()[-1]
        assert f"pid {first.pid} on host {socket.gethostname()}" in last
        assert "the first job" in last and workdir_lock.LOCK_FILE in last
        assert not os.path.exists(tmp_path / "checkpoints")  # it touched nothing
        assert json.load(open(tmp_path / workdir_lock.LOCK_FILE))["pid"] == first.pid
    finally:
        first.kill()
        first.wait()


def test_a_stale_lock_is_taken_over_and_released_at_the_end(records, tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_lock(tmp_path, int(dead.stdout))  # a job killed with -9: its lock stayed
    result = train.train_and_evaluate(tiny_config(records, 2), str(tmp_path))
    assert result["status"] == "done" and result["step"] == 2
    assert "stale lock" in caplog.text and dead.stdout.strip() in caplog.text
    assert not os.path.exists(tmp_path / workdir_lock.LOCK_FILE)
    # a lock of this very process is live: a second job in it is refused
    with workdir_lock.WorkdirLock(str(tmp_path)):
        with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()} "):
            train.train_and_evaluate(tiny_config(records, 2), str(tmp_path))
    assert not os.path.exists(tmp_path / workdir_lock.LOCK_FILE)
