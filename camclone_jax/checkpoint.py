"""Training checkpoints (orbax ``CheckpointManager``) and the base model they refer to.

A run's workdir:
  WORKDIR/run.json            the run's config (JSON) and the base model's path
  WORKDIR/base/               the base model when the config starts from random weights (our
                              converted transformer format, written once)
  WORKDIR/checkpoints/<step>/ state: step, trainable params, optimizer state, EMA, RNG key;
                              data: the Grain iterator position (one JSON per process)
  WORKDIR/export/             the trained model as one full param set (``export_model``)

Only the trainable parameters are saved per checkpoint; the frozen ones are the base model,
referenced by path and loaded at start. Saves are asynchronous (training goes on while the
arrays are written) and atomic: orbax writes into a temporary directory and renames it when
complete, so a crash mid-save leaves the previous checkpoint as the latest usable one.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from camclone_jax.convert import transformer as transformer_io
from camclone_jax.convert.io import flatten_params, is_converted_dir, write_atomic

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


class CheckpointError(RuntimeError):
    """A checkpoint or base model that does not fit the run (names what and how to fix it)."""


def _without_none(state: dict) -> dict:
    return {k: v for k, v in state.items() if v is not None}


class Checkpointer:
    """Async orbax checkpoints of the train state (+ data iterator) under ``directory``."""

    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        if save_every < 1 or keep < 1:
            raise ValueError(f"checkpoint save_every and keep must be >= 1, got {save_every}, {keep}")
        self.directory, self.save_every = os.path.abspath(directory), save_every
        options = ocp.CheckpointManagerOptions(  # the interval is applied in `save`
            max_to_keep=keep, save_interval_steps=1, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (temporary, unfinished saves are ignored)."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: dict, loader=None, force: bool = False) -> bool:
        """Starts saving ``state`` (and the loader position) at ``step`` if the interval says so
        (or ``force``); returns whether a save started."""
        import grain

        if step % self.save_every and not force:
            return False
        items = {"state": ocp.args.StandardSave(_without_none(state))}
        if loader is not None:
            items["data"] = grain.checkpoint.CheckpointSave(loader)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def has_data_state(self, step: int) -> bool:
        """Whether ``step`` holds this process's data iterator position (it does not when the
        checkpoint was written by a different number of processes)."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.directory, str(step), "data", name))

    def restore(self, abstract_state: dict, loader=None, step: int | None = None) -> dict:
        """The state at ``step`` (default: latest), placed as ``abstract_state`` says (shapes,
        dtypes, shardings: it may be another mesh than the one that saved); restores the
        loader's position in place when given (see ``has_data_state``)."""
        import grain

        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(_without_none(abstract_state))}
        if loader is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(loader)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not fit this run's state (a changed "
                f"model, optimizer rules or EMA setting?): {e}") from e
        state = dict(restored["state"])
        return {**{k: None for k in abstract_state}, **state}

    def wait(self):
        """Blocks until pending saves are complete."""
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


# ------------------------------------------------------------------------------ run record
def write_run_record(workdir: str, config_json: dict, base: str):
    """Writes WORKDIR/run.json (process 0 only)."""
    if jax.process_index() == 0:
        write_atomic(os.path.join(workdir, RUN_FILE),
                     json.dumps({"config": config_json, "base": base}, indent=2))


def read_run_record(workdir: str) -> dict | None:
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------ base model
def load_base(path: str, dit_config, shardings=None):
    """Base DiT params from ``path`` (anything ``convert.transformer.load_transformer`` reads),
    checked against ``dit_config``'s architecture; placed by ``shardings`` when given (our
    converted format is restored straight into them)."""
    if not os.path.exists(path):
        raise CheckpointError(
            f"base checkpoint {path!r} does not exist; convert one with `python -m "
            "camclone_jax.convert import --kind transformer --src WEIGHTS --out DIR`, or set "
            "base_checkpoint='' to start from random weights (config.seed)")
    from camclone_jax.models import params as params_lib

    expected = flatten_params(params_lib.param_shapes(dit_config))
    if dit_config.concat == "channel":
        _, params = transformer_io.load_transformer(path)  # the base's own architecture
        params = expand_for_channel_concat(params, dit_config)
    elif is_converted_dir(path) and shardings is not None:
        flat_shard = flatten_params(shardings)
        abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=flat_shard[k])
                    for k, v in expected.items()}
        from camclone_jax.convert.io import unflatten_params
        try:
            params = ocp.StandardCheckpointer().restore(
                os.path.join(os.path.abspath(path), "params"), unflatten_params(abstract))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"base checkpoint {path} does not fit the configured model: {e}")
        return params
    else:
        _, params = transformer_io.load_transformer(path, dit_config)
    got = flatten_params(params)
    bad = sorted(k for k in expected if k not in got or tuple(got[k].shape) != expected[k].shape)
    extra = sorted(set(got) - set(expected))
    if bad or extra:
        raise CheckpointError(f"base checkpoint {path} does not fit the configured model: "
                              f"missing or mis-shaped {bad[:8]}, unexpected {extra[:8]}")
    if shardings is not None:
        params = jax.device_put(params, shardings)
    return params


def expand_for_channel_concat(params, dit_config):
    """A target-only base's params for a ``concat="channel"`` model: the patch embedding's
    kernel [pt, ph, pw, c_in, dim] grows to [pt, ph, pw, 3 c_in, dim] with zero rows for the
    camera and content channels, so fine-tuning starts from the base's own function (the
    paper's channel-concatenation ablation; frame concatenation needs no new parameter).
    A kernel that already has 3 c_in input rows is left as it is."""
    kernel = np.asarray(params["patch_embedding"]["kernel"])  # [pt, ph, pw, c, dim]
    want = dit_config.patch_in_channels
    if kernel.shape[3] == want:
        return params
    if kernel.shape[3] * 3 != want:
        raise CheckpointError(f"base patch embedding takes {kernel.shape[3]} channels; a "
                              f"channel-concat model of in_channels {dit_config.in_channels} "
                              f"needs {want // 3} (or {want} already expanded)")
    pad = np.zeros(kernel.shape[:3] + (want - kernel.shape[3], kernel.shape[4]), kernel.dtype)
    params = dict(params)
    params["patch_embedding"] = {**params["patch_embedding"],
                                 "kernel": np.concatenate([kernel, pad], axis=3)}
    return params


def save_base(path: str, dit_config, params):
    """Writes a freshly initialised base model (our converted format; every process calls it)."""
    transformer_io.save_transformer(path, dit_config, params, source="random init")


def _sync(name: str):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------------- export
def export_model(out: str, dit_config, params, *, extra_files: dict | None = None,
                 overwrite: bool = False, source: str = ""):
    """Writes the full param set as our converted transformer directory (readable by
    ``load_transformer``, the sampler and ``convert export``), plus small JSON side files
    (e.g. codec.json, text.json), atomically; every process calls it."""
    from camclone_jax.convert.io import save_converted
    save_converted(out, transformer_io.KIND, dit_config.to_dict(), params, source=source,
                   overwrite=overwrite, extra_files=extra_files)
