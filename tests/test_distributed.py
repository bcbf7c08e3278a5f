"""Multi-process start-up: environment parsing (pure), the initialize plumbing, launch scripts."""

import os
import pathlib
import subprocess

import ml_collections
import pytest

from camclone_jax import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
EXPLICIT = {"COORDINATOR_ADDRESS": "10.0.0.1:1234", "NUM_PROCESSES": "4", "PROCESS_ID": "2"}
SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[003-004,010],cpu1",
              "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "3", "SLURM_STEP_TASKS_PER_NODE": "1(x4)"}


def test_single_process_is_a_no_op_plan():
    for env in ({}, {**EXPLICIT, "NUM_PROCESSES": "1", "PROCESS_ID": "0"},
                {"LOCAL_DEVICE_IDS": "0,1"}, {**EXPLICIT, "CAMCLONE_DISTRIBUTED": "off"},
                # inside an sbatch script but outside srun: one process, whatever NTASKS says
                {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "16", "SLURM_PROCID": "0",
                 "SLURM_JOB_NODELIST": "n[1-2]"},
                {"TPU_WORKER_HOSTNAMES": "t1v-worker-0"}):
        plan = distributed.resolve(env=env)
        assert plan == distributed.Plan("single", {}) and not plan.is_multi_process, env


def test_explicit_variables_with_and_without_jax_prefix():
    want = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2,
            "cluster_detection_method": "deactivate"}
    assert distributed.resolve(env=EXPLICIT) == distributed.Plan("explicit", want)
    prefixed = {f"JAX_{k}": v for k, v in EXPLICIT.items()}
    assert distributed.resolve(env={**prefixed, "JAX_LOCAL_DEVICE_IDS": "0, 1"}).kwargs == {
        **want, "local_device_ids": [0, 1]}
    # arguments (a dict, or a config's `distributed` field) win over the environment
    assert distributed.resolve({"process_id": 0}, env=EXPLICIT).kwargs["process_id"] == 0
    config = ml_collections.ConfigDict({"model": {}, "distributed": {
        "process_id": 1, "initialization_timeout": 60}})
    kwargs = distributed.resolve(config, env=EXPLICIT).kwargs
    assert (kwargs["process_id"], kwargs["initialization_timeout"]) == (1, 60)
    assert distributed.resolve(ml_collections.ConfigDict({"model": {}}), env={}).source == "single"


@pytest.mark.parametrize("env, match", [
    ({"COORDINATOR_ADDRESS": "10.0.0.1:1234"},
     "COORDINATOR_ADDRESS given but NUM_PROCESSES .*PROCESS_ID .*missing"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     "JAX_NUM_PROCESSES, JAX_PROCESS_ID given but COORDINATOR_ADDRESS"),
    ({**EXPLICIT, "JAX_PROCESS_ID": "3"}, "PROCESS_ID='2' and JAX_PROCESS_ID='3' disagree"),
    ({**EXPLICIT, "PROCESS_ID": "4"}, "process id 4 is not below the process count 4"),
    ({**EXPLICIT, "NUM_PROCESSES": "four"}, "NUM_PROCESSES must be an integer"),
    ({**EXPLICIT, "NUM_PROCESSES": "0"}, "NUM_PROCESSES must be >= 1"),
    ({**EXPLICIT, "COORDINATOR_ADDRESS": "10.0.0.1"}, "must be 'host:port'"),
    ({"CAMCLONE_DISTRIBUTED": "mpi"}, "is not one of"),
    ({"SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2"}, "SLURM job step without"),
])
def test_bad_environments_raise_clear_errors(env, match):
    with pytest.raises(ValueError, match=match):
        distributed.resolve(env=env)


def test_unknown_option_keys_raise():
    with pytest.raises(ValueError, match=r"unknown distributed options \['coordinator'\]"):
        distributed.resolve({"coordinator": "a:1"}, env={})


def test_slurm_step():
    plan = distributed.resolve(env=SLURM_STEP)
    assert plan == distributed.Plan("slurm", {
        "coordinator_address": f"gpu003:{61440 + 4242 % 4096}", "num_processes": 4,
        "process_id": 3, "cluster_detection_method": "deactivate"})  # 1 task/node: all GPUs
    # 8 tasks per node: one GPU each, unless SLURM already bound one GPU per task
    per_gpu = {**SLURM_STEP, "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_NODEID": "1",
               "SLURM_LOCALID": "5", "SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "13"}
    assert distributed.resolve(env=per_gpu).kwargs["local_device_ids"] == [5]
    bound = distributed.resolve(env={**per_gpu, "CUDA_VISIBLE_DEVICES": "5"}).kwargs
    assert "local_device_ids" not in bound
    # explicit variables override single fields; the port can be set
    mixed = distributed.resolve(env={**SLURM_STEP, "JAX_COORDINATOR_PORT": "9999",
                                     "PROCESS_ID": "0"})
    assert mixed.source == "explicit"
    assert (mixed.kwargs["coordinator_address"], mixed.kwargs["process_id"]) == ("gpu003:9999", 0)


def test_slurm_hostlists_and_task_counts():
    assert distributed.first_slurm_host("node001") == "node001"
    assert distributed.first_slurm_host("node001,host2") == "node001"
    assert distributed.first_slurm_host("node[001-015],host2") == "node001"
    assert distributed.first_slurm_host("node[007,009-015]") == "node007"
    assert distributed.first_slurm_host("rack[1-2]-n[07,09],x") == "rack1-n07"
    assert [distributed.slurm_tasks_on_node("8(x3),4", i) for i in range(4)] == [8, 8, 8, 4]
    with pytest.raises(ValueError, match="cannot parse"):
        distributed.slurm_tasks_on_node("8x3", 0)


def test_tpu_pods_use_jax_auto_detection():
    for env in ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, {"MEGASCALE_COORDINATOR_ADDRESS": "h"},
                {"CAMCLONE_DISTRIBUTED": "auto"}, {"TPU_PROCESS_ADDRESSES": "a:1,b:1"}):
        assert distributed.resolve(env=env) == distributed.Plan("auto", {}), env
    # partial explicit settings are passed on for JAX to complete
    plan = distributed.resolve({"mode": "auto", "initialization_timeout": 30},
                               env={"JAX_COORDINATOR_ADDRESS": "w0:8476"})
    assert plan.kwargs == {"coordinator_address": "w0:8476", "initialization_timeout": 30}


def test_initialize_calls_jax_only_for_several_processes(monkeypatch):
    import jax

    calls = []

    def fake_initialize(coordinator_address=None, num_processes=None, process_id=None,
                        local_device_ids=None, cluster_detection_method=None,
                        initialization_timeout=300):
        given = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                     process_id=process_id, local_device_ids=local_device_ids,
                     cluster_detection_method=cluster_detection_method)
        calls.append({k: v for k, v in given.items() if v is not None})

    monkeypatch.setattr(jax.distributed, "initialize", fake_initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    for key in ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID", "CAMCLONE_DISTRIBUTED"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(f"JAX_{key}", raising=False)
    monkeypatch.delenv("SLURM_STEP_NODELIST", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert distributed.initialize().source == "single" and calls == []
    for key, value in EXPLICIT.items():
        monkeypatch.setenv(key, value)
    assert distributed.initialize().source == "explicit"
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                      "process_id": 2, "cluster_detection_method": "deactivate"}]


# ------------------------------------------------------------------------------ launch scripts
def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), *extra.pop("path", []),
                                                      env.get("PYTHONPATH")]))
    return {**env, **extra}


def test_launch_scripts_are_valid_bash():
    for script in ("local.sh", "slurm_gpu.sbatch", "tpu_pod.sh"):
        subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)
        assert os.access(LAUNCH / script, os.X_OK), script


def test_local_sh_stops_everyone_and_returns_the_failure(tmp_path):
    (tmp_path / "failer.py").write_text(
        "import os, sys, time\n"
        "print(os.environ['PROCESS_ID'], os.environ['NUM_PROCESSES'], sys.argv[1:], flush=True)\n"
        "sys.exit(3) if os.environ['PROCESS_ID'] == '1' else time.sleep(120)\n")
    run = subprocess.run([str(LAUNCH / "local.sh"), "-n", "3", "-m", "failer", "--", "--x=1"],
                         env=_env(path=[str(tmp_path)]), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 3, run.stderr
    assert "[process 1] 1 3 ['--x=1']" in run.stdout
    assert "stopping the others" in run.stderr


def test_local_sh_two_process_connectivity_check():
    """A real 2-process jax.distributed job on CPU: each process gathers both indices."""
    run = subprocess.run([str(LAUNCH / "local.sh"), "-n", "2", "-d", "2", "-m",
                          "camclone_jax.distributed"], env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for i in range(2):
        assert f"process {i}/2 (explicit): 2 local, 4 global devices, gathered [0, 1]" in run.stdout


def test_tpu_pod_sh_runs_train_on_all_workers(tmp_path):
    fake = tmp_path / "gcloud"  # prints its arguments instead of connecting
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = _env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", PROJECT="proj")
    run = subprocess.run([str(LAUNCH / "tpu_pod.sh"), "my-tpu", "us-east5-a", "configs/x.py",
                          "gs://b/run", "--config.note=a b"], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    args = run.stdout.splitlines()
    assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
    assert {"--zone=us-east5-a", "--project=proj", "--worker=all"} <= set(args)
    command = next(a for a in args if a.startswith("--command="))
    assert "CAMCLONE_DISTRIBUTED=auto" in command
    assert "python -u -m camclone_jax.train --config=configs/x.py --workdir=gs://b/run " \
           "--config.note=a\\ b" in command
    assert subprocess.run([str(LAUNCH / "tpu_pod.sh")], capture_output=True).returncode == 2
