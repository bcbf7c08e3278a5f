"""Faults during a training run, met at the command line: a second job on a locked workdir,
a corrupt newest checkpoint, a checkpoint save that fails, a corrupt ArrayRecord chunk."""

import errno
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grain
import numpy as np
import pytest

from camclone_jax.data import records as records_lib
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import loop as train
from camclone_jax.training import workdir_lock
from tests.data.conftest import corrupt_copy
from tests.training.test_train import REPO, records, tiny_config  # noqa: F401 (fixture)

TINY = {"model.dim": 32, "model.ffn_dim": 64, "model.num_layers": 2, "model.num_heads": 2,
        "model.text_dim": 16, "model.freq_dim": 32, "model.prediction": "velocity",
        "data.kind": "mp4", "data.frames": 9, "data.height": 32, "data.width": 48,
        "data.num_workers": 0, "data.text_len": 4, "batch_size": 2, "checkpoint.every": 2,
        "clone_check.enabled": False,
        "log_every": 1, "eval_every": 0, "sample.enabled": False,
        "optim.schedule": "constant", "optim.rules": (("self_attn", "train"), (".*", None))}


def run_cli(workdir, data, total_steps=2, timeout=240, prefix=("-m", "camclone_jax.train"),
            **overrides):
    """`python -m camclone_jax.train` on the tiny config of tests/training/test_train.py (``prefix``:
    python's arguments before the train flags, e.g. a script that injects a fault first)."""
    args = [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]
    cmd = [sys.executable, *prefix, "--config=configs/synthetic_tiny.py",
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


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_lock(tmp_path, int(dead.stdout))  # a job killed with -9: its lock stayed
    with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
        assert "stale lock" in caplog.text and dead.stdout.strip() in caplog.text
        assert lock.holder()["pid"] == os.getpid()
        with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()} "):
            workdir_lock.WorkdirLock(str(tmp_path)).acquire()  # this process is alive
    assert not os.path.exists(tmp_path / workdir_lock.LOCK_FILE)  # released
    # (the train CLI takes a stale lock over in test_a_corrupt_record_chunk_... below)


# ------------------------------------------------------------------------------ restore
def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(records, tmp_path):
    train.train_and_evaluate(tiny_config(records, 4), str(tmp_path))  # checkpoints 2 and 4
    ckpts = tmp_path / "checkpoints"
    data = max(glob.glob(str(ckpts / "4" / "state" / "ocdbt.process_0" / "d" / "*")),
               key=os.path.getsize)
    with open(data, "r+b") as f:  # truncated, as by a full disk or a copy cut short
        f.truncate(os.path.getsize(data) // 2)
    out = run_cli(tmp_path, records, total_steps=6)
    assert out.returncode == 0, out.stderr[-3000:]
    skipped = [line for line in out.stderr.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and f"{ckpts}/4: corrupt" in skipped[0]
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr
    assert json.loads(out.stdout[out.stdout.index("{"):])["start_step"] == 2
    assert os.path.isdir(ckpts / "4.corrupt") and sorted(os.listdir(ckpts / "6"))  # kept, redone
    # a missing _METADATA is a damaged checkpoint too; with none intact: one line, status 2
    for step in [n for n in os.listdir(ckpts) if n.isdigit()]:  # 4 and 6 (keep 2)
        os.remove(ckpts / step / "state" / "_METADATA")
    with pytest.raises(ckpt_lib.CheckpointError, match=r"^no intact checkpoint in .*step 6: "
                       r"state/_METADATA is missing.*step 4: state/_METADATA") as e:
        train.train_and_evaluate(tiny_config(records, 8), str(tmp_path))
    assert "changed model" not in str(e.value)  # the CLI prints it as one line, exit status 2


# ------------------------------------------------------------------------------ saving
FULL_DISK = """
import errno, runpy, sys
from orbax.checkpoint._src.path import async_path
rename = async_path.rename
async def full(src, dst):  # the disk fills while step 4 is written (in the background thread)
    if dst.name.isdigit() and int(dst.name) >= 4:
        raise OSError(errno.ENOSPC, "No space left on device", str(src))
    return await rename(src, dst)
async_path.rename = full
sys.argv = ["train"] + sys.argv[1:]
runpy.run_module("camclone_jax.train", run_name="__main__", alter_sys=True)
"""


def test_a_failed_save_stops_the_run_at_once_with_the_last_good_checkpoint(records, tmp_path):
    cli = run_cli(tmp_path, records, total_steps=12, prefix=["-c", FULL_DISK])
    assert cli.returncode == 2, cli.stderr[-3000:]
    last = cli.stderr.strip().splitlines()[-1]
    ckpts = tmp_path / "checkpoints"
    assert last.startswith(f"error: saving checkpoint step 4 to {ckpts} failed: ")
    assert "No space left on device" in last and f"last good checkpoint is step 2 ({ckpts}/2)" in last
    logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert max(logged) <= 6  # stopped at the next step or the next save, not at the end
    assert len(cli.stderr.splitlines()) < 60 and "Traceback" not in cli.stderr
    assert not os.path.exists(tmp_path / "export")
    assert sorted(n for n in os.listdir(ckpts) if n.isdigit()) == ["2"]


def test_a_save_without_space_or_permission_is_refused_before_it_starts(tmp_path,
                                                                       monkeypatch):
    state = {"params": {"w": np.ones((256, 256), np.float32)}, "ema": None}  # 0.25 MiB
    ckpts = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), save_every=1, keep=2)
    assert ckpts.save(1, state)
    ckpts.wait()
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    with pytest.raises(ckpt_lib.CheckpointSaveError, match=r"step 2 to .* failed: no space: 0\.1 "
                       r"MiB free on its disk, the checkpoint needs about 0\.2 MiB.*last good "
                       r"checkpoint is step 1"):
        ckpts.save(2, state)
    monkeypatch.undo()
    mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # the folder became read-only (root ignores chmod)
        if str(dir).endswith("ckpt"):
            raise OSError(errno.EROFS, "Read-only file system")
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ckpt_lib.CheckpointSaveError, match=r"^cannot save checkpoints to .*: "
                       r"the folder is not writable \(Read-only file system\)"):
        ckpts.check_writable()  # what train does before its first step
    with pytest.raises(ckpt_lib.CheckpointSaveError, match="not writable .*Read-only file system"):
        ckpts.save(3, state)
    ckpts.close()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]


# ------------------------------------------------------------------------------ data
def test_a_corrupt_record_chunk_is_skipped_counted_and_the_run_finishes(records, tmp_path):
    files = [os.path.join(records, f) for f in sorted(os.listdir(records))]
    n = sum(records_lib.num_records(f) for f in files)
    first = int(grain.MapDataset.range(n).shuffle(seed=0)[0])  # the run's first example (seed 0)
    data = corrupt_copy(records, str(tmp_path / "data"), {first})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_lock(tmp_path / "run", int(dead.stdout))  # and a stale lock from a killed job
    out = run_cli(tmp_path / "run", data, total_steps=1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "taking over the stale lock" in out.stderr
    assert not os.path.exists(tmp_path / "run" / workdir_lock.LOCK_FILE)  # released at the end
    name = os.path.basename(files[0])
    assert f"skipping bad example (record {first}): unreadable record at {name}, record {first}" \
        in out.stderr and "chunk data hash mismatch" in out.stderr
    assert "skipped 1 bad example(s) (1 so far on this host)" in out.stderr
    assert json.loads(out.stdout[out.stdout.index("{"):])["status"] == "done"
