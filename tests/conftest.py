"""Test set-up: 8 fake CPU devices (for sharding tests) and float32 matmuls everywhere.

XLA_FLAGS must be set before jax is imported anywhere, so it lives here.

Compile time dominates the suite (tiny models, many shapes), so two things cut it:
- `--xla_backend_optimization_level=0`: LLVM's optimisation of the CPU code is skipped. The HLO
  passes still run and results stay IEEE float32; only the generated code is slower, which tiny
  test shapes do not notice (about -35% of the suite's CPU time).
- one persistent compilation cache per test session (a temporary folder, removed at the end):
  pytest-xdist workers and the subprocesses the tests start (train CLI, notebooks, multi-process
  runs) inherit its environment variables, so a program compiled once (e.g. the tiny training
  step that many training tests build) is loaded from the cache afterwards. Set
  JAX_COMPILATION_CACHE_DIR yourself to keep a cache across sessions.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session (xdist's
    _cache_dir = tempfile.mkdtemp(prefix="camclone_jax_test_cache_")  # controller) makes it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
