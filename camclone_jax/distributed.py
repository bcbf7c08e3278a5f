"""Multi-process start-up: ``jax.distributed.initialize`` from arguments or the environment.

``initialize()`` is the first call of every entry point. It is a no-op for a single process and
otherwise starts JAX's distributed runtime with settings taken, in order of precedence, from:

  1. arguments: a dict (or a config with a ``distributed`` field) with any of
     coordinator_address, num_processes, process_id, local_device_ids,
     initialization_timeout, mode;
  2. explicit variables: COORDINATOR_ADDRESS ("host:port"), NUM_PROCESSES, PROCESS_ID,
     LOCAL_DEVICE_IDS ("0,1,..."), each also read with a JAX_ prefix (JAX_COORDINATOR_ADDRESS,
     ...); launch/local.sh sets these. Either all three of address, count and id, or none
     (unless a cluster below fills the rest): a half-set environment is an error naming what is
     missing, never a hang;
  3. a SLURM job step (``srun``; SLURM_STEP_NODELIST present): process count and id from
     SLURM_STEP_NUM_TASKS / SLURM_NTASKS and SLURM_PROCID, the coordinator is the first node
     of the step on port COORDINATOR_PORT / JAX_COORDINATOR_PORT (else 61440 + job id mod
     4096, JAX's own convention). One task per node sees all of the node's GPUs; several tasks
     per node get one GPU each (LOCAL_DEVICE_IDS = [SLURM_LOCALID]) unless SLURM already bound
     one GPU per task through CUDA_VISIBLE_DEVICES;
  4. a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES naming several hosts,
     MEGASCALE_COORDINATOR_ADDRESS) or CAMCLONE_DISTRIBUTED=auto (launch/tpu_pod.sh): JAX's
     own cluster auto-detection (``jax.distributed.initialize()`` without arguments, which
     reads the TPU metadata server).

CAMCLONE_DISTRIBUTED=off (or mode="off") forces a single process. ``resolve`` is the pure part
(environment in, plan out) and is what the tests exercise.

``python -m camclone_jax.distributed`` is a connectivity check: it initialises, gathers every
process's index over the network, and prints the topology.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import sys
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

OPTION_KEYS = ("coordinator_address", "num_processes", "process_id", "local_device_ids",
               "initialization_timeout", "mode")
MODES = ("env", "auto", "off")
# (option, un-prefixed variable); each is also read as JAX_<variable>.
_ENV_VARS = (("coordinator_address", "COORDINATOR_ADDRESS"), ("num_processes", "NUM_PROCESSES"),
             ("process_id", "PROCESS_ID"), ("local_device_ids", "LOCAL_DEVICE_IDS"))
_REQUIRED = ("coordinator_address", "num_processes", "process_id")
_TPU_HOSTS_VARS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this process joins the job: ``source`` is single | explicit | slurm | auto;
    ``kwargs`` go to ``jax.distributed.initialize`` (unused for "single")."""

    source: str
    kwargs: dict[str, Any]

    @property
    def is_multi_process(self) -> bool:
        return self.source != "single"


# ----------------------------------------------------------------------------- options
def _options(config_or_kwargs) -> dict[str, Any]:
    """The option dict from None, a dict of options, or a config with a ``distributed`` field."""
    if config_or_kwargs is None:
        return {}
    if isinstance(config_or_kwargs, Mapping):
        opts = config_or_kwargs
        if "distributed" in opts:
            opts = opts["distributed"]
    else:  # ml_collections.ConfigDict, dataclass or namespace: only its `distributed` field
        try:
            opts = config_or_kwargs["distributed"]
        except (KeyError, TypeError):
            opts = getattr(config_or_kwargs, "distributed", None)
    if opts is None:
        return {}
    if hasattr(opts, "to_dict"):
        opts = opts.to_dict()
    elif dataclasses.is_dataclass(opts):
        opts = dataclasses.asdict(opts)
    opts = {k: v for k, v in dict(opts).items() if v is not None}
    unknown = sorted(set(opts) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown distributed options {unknown}; known: {OPTION_KEYS}")
    return opts


def _env_value(env: Mapping[str, str], name: str) -> tuple[str | None, str | None]:
    """(value, variable it came from) of NAME or JAX_NAME; both set and different: an error."""
    plain, prefixed = env.get(name) or None, env.get(f"JAX_{name}") or None
    if plain and prefixed and plain != prefixed:
        raise ValueError(f"{name}={plain!r} and JAX_{name}={prefixed!r} disagree; set one")
    if plain:
        return plain, name
    return (prefixed, f"JAX_{name}") if prefixed else (None, None)


def _int(value, what: str, minimum: int = 0) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {number}")
    return number


def _device_ids(value, what: str) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return [_int(v, what) for v in value]


def _check_address(address: str, what: str) -> str:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be 'host:port', got {address!r}")
    return str(address)


# ----------------------------------------------------------------------------- SLURM
def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM hostlist: 'gpu[003-004,010],cpu1' -> 'gpu003';
    'rack[1-2]-n[07,09]' -> 'rack1-n07'."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first top-level comma ends the first entry
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    host = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], entry)
    if not host or "[" in host or "]" in host:
        raise ValueError(f"cannot parse the SLURM node list {nodelist!r}")
    return host


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node ``node_id`` from SLURM's compressed form: '8(x3),4' -> [8, 8, 8, 4]."""
    counts = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"cannot parse SLURM tasks per node {tasks_per_node!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    if not 0 <= node_id < len(counts):
        raise ValueError(f"SLURM_NODEID {node_id} outside tasks per node {tasks_per_node!r}")
    return counts[node_id]


def _slurm(env: Mapping[str, str]) -> dict[str, Any]:
    """Settings of a SLURM job step (empty outside ``srun``)."""
    if "SLURM_STEP_NODELIST" not in env:
        return {}
    count_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    missing = [v for v in (count_var, "SLURM_PROCID", "SLURM_JOB_ID") if v not in env]
    if missing:
        raise ValueError(f"SLURM job step without {missing}: cannot derive the process layout")
    port = _env_value(env, "COORDINATOR_PORT")[0]
    port = _int(port, "COORDINATOR_PORT", 1) if port else (
        61440 + _int(env["SLURM_JOB_ID"], "SLURM_JOB_ID") % 4096)
    out = {"coordinator_address": f"{first_slurm_host(env['SLURM_STEP_NODELIST'])}:{port}",
           "num_processes": _int(env[count_var], count_var, 1),
           "process_id": _int(env["SLURM_PROCID"], "SLURM_PROCID")}
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if per_node and "SLURM_LOCALID" in env:
        here = slurm_tasks_on_node(per_node, _int(env.get("SLURM_NODEID", "0"), "SLURM_NODEID"))
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
        if here > 1 and len(visible) != 1:  # one GPU per task, not yet bound by SLURM
            out["local_device_ids"] = [_int(env["SLURM_LOCALID"], "SLURM_LOCALID")]
    return out


def _tpu_pod(env: Mapping[str, str]) -> bool:
    """Whether the environment names a multi-host Cloud TPU slice (or several slices)."""
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    return any(len([h for h in env.get(v, "").split(",") if h]) > 1 for v in _TPU_HOSTS_VARS)


# ----------------------------------------------------------------------------- resolve
def resolve(config_or_kwargs=None, env: Mapping[str, str] | None = None) -> Plan:
    """Pure: the ``Plan`` for these options and environment (default ``os.environ``)."""
    env = os.environ if env is None else env
    opts = _options(config_or_kwargs)
    mode = opts.pop("mode", None) or (env.get("CAMCLONE_DISTRIBUTED") or "env").lower()
    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r} (CAMCLONE_DISTRIBUTED or mode=) is not one "
                         f"of {MODES}")
    if mode == "off":
        return Plan("single", {})

    explicit, origin = {}, {}
    for key, var in _ENV_VARS:
        if key in opts:
            explicit[key], origin[key] = opts[key], f"argument {key}"
        else:
            value, name = _env_value(env, var)
            if value is not None:
                explicit[key], origin[key] = value, name
    if "coordinator_address" in explicit:
        _check_address(explicit["coordinator_address"], origin["coordinator_address"])
    if "num_processes" in explicit:
        explicit["num_processes"] = _int(explicit["num_processes"], origin["num_processes"], 1)
    if "process_id" in explicit:
        explicit["process_id"] = _int(explicit["process_id"], origin["process_id"])
    if "local_device_ids" in explicit:
        explicit["local_device_ids"] = _device_ids(explicit["local_device_ids"],
                                                   origin["local_device_ids"])
    extra = {"initialization_timeout": _int(opts["initialization_timeout"],
                                            "initialization_timeout", 1)} \
        if "initialization_timeout" in opts else {}

    if mode == "auto" or (_tpu_pod(env) and not all(k in explicit for k in _REQUIRED)):
        # JAX's cluster detection fills whatever is not given (TPU metadata, SLURM, Open MPI).
        return Plan("auto", {**explicit, **extra})

    slurm = _slurm(env)
    kwargs = {**slurm, **explicit}
    missing = [k for k in _REQUIRED if k not in kwargs]
    given = [origin[k] for k in _REQUIRED if k in explicit]
    if given and missing:
        want = ", ".join(f"{dict(_ENV_VARS)[k]} (or JAX_{dict(_ENV_VARS)[k]})" for k in missing)
        raise ValueError(f"half-set multi-process environment: {', '.join(given)} given but "
                         f"{want} missing; set all of coordinator address, process count and "
                         "process id, or none of them (run under srun, or "
                         "CAMCLONE_DISTRIBUTED=auto on a TPU pod)")
    if missing or kwargs["num_processes"] == 1:
        return Plan("single", {})
    if kwargs["process_id"] >= kwargs["num_processes"]:
        raise ValueError(f"process id {kwargs['process_id']} is not below the process count "
                         f"{kwargs['num_processes']}")
    # Everything is resolved: stop JAX's auto-detection from second-guessing local devices
    # (under SLURM it would restrict a one-process-per-node job to one GPU).
    return Plan("explicit" if given else "slurm",
                {**kwargs, **extra, "cluster_detection_method": "deactivate"})


def initialize(config_or_kwargs=None) -> Plan:
    """Starts ``jax.distributed`` if this is one of several processes; see the module docstring.

    Must run before anything touches a JAX backend. Calling it again is a no-op.
    """
    plan = resolve(config_or_kwargs)
    if not plan.is_multi_process:
        log.info("single process: jax.distributed not initialised")
        return plan
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None and is_initialized():
        return plan
    kwargs = dict(plan.kwargs)
    if "cluster_detection_method" not in inspect.signature(jax.distributed.initialize).parameters:
        kwargs.pop("cluster_detection_method", None)  # older jax: nothing to deactivate
    log.info("jax.distributed.initialize from %s: %s", plan.source, kwargs)
    jax.distributed.initialize(**kwargs)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return plan


def main() -> None:
    """Connectivity check: every process reports, process 0 prints the gathered indices."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = initialize()
    except ValueError as e:  # a bad environment: one line, exit status 2, as every command
        print(f"error: {e}", file=sys.stderr)  # (errors.report; the ground floor imports
        raise SystemExit(2) from None          # nothing of the package)

    indices = multihost_utils.process_allgather(np.int32(jax.process_index()))  # [processes]
    expected = list(range(jax.process_count()))
    if sorted(np.asarray(indices).ravel().tolist()) != expected:
        raise SystemExit(f"gathered process indices {indices} != {expected}")
    print(f"process {jax.process_index()}/{jax.process_count()} ({plan.source}): "
          f"{jax.local_device_count()} local, {jax.device_count()} global devices, "
          f"gathered {np.asarray(indices).ravel().tolist()}", flush=True)


if __name__ == "__main__":
    main()
