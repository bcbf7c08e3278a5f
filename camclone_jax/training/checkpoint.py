"""Training checkpoints (orbax ``CheckpointManager``), checked both ways, and the base model.

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

Faults: a save that cannot start (folder not writable, not enough free space for the state)
or fails in the background (disk full mid-write) raises `CheckpointSaveError` at once, naming
the step, the folder, the cause and the last good checkpoint. On restore, a checkpoint that
cannot be read back (truncated file, missing _METADATA) is skipped for the newest intact one
and moved to <step>.corrupt; one that does not fit the run names the differing entries.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
import grain

from camclone_jax.convert import transformer as transformer_io
from camclone_jax.convert.io import (is_converted_dir, one_line, quiet_orbax, save_converted,
                                     settle)
from camclone_jax.errors import UserError
from camclone_jax.models import params as params_lib
from camclone_jax.utils import flatten_params, unflatten_params, write_atomic

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or base model that does not fit the run (names what and how to fix it)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint that cannot be read back (truncated, damaged or missing files)."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint save that failed (disk full, folder not writable, ...): the run stops."""


REQUIRED_FILES = ("state/_METADATA",)  # without it orbax misreads the tree ("a changed model?")
CORRUPT_SUFFIX = ".corrupt"  # a skipped checkpoint is moved to DIR/<step>.corrupt


def _without_none(state: dict) -> dict:
    return {k: v for k, v in state.items() if v is not None}


def _leaf_name(path) -> str:
    """A key path as orbax names the leaf: 'opt_state.1.mu.blocks.self_attn.q.kernel'."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
    return ".".join(parts)


def _agree(ok: bool) -> bool:
    """True when ``ok`` on every process (multi-process runs decide together)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


class Checkpointer:
    """Async orbax checkpoints of the train state (+ data iterator) under ``directory``.

    Saves are checked: before each save starts, the folder must be writable and hold the
    state's size in free space; a save that fails in the background is noticed at the next
    `save` call (the loop calls it every step) or at `wait`, and raises `CheckpointSaveError`
    naming the step, the folder, the cause and the last good checkpoint. Restores skip a
    corrupt newest checkpoint for the newest intact one (`restore_newest_intact`)."""

    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        if save_every < 1 or keep < 1:
            raise ValueError(f"checkpoint save_every and keep must be >= 1, got {save_every}, {keep}")
        self.directory, self.save_every = os.path.abspath(directory), save_every
        options = ocp.CheckpointManagerOptions(  # the interval is applied in `save`
            max_to_keep=keep, save_interval_steps=1, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending, self._failed = None, False  # the step being saved; a save failed
        self._quiet = contextlib.ExitStack()  # orbax's errors: kept in one line, not logged
        self._errors = self._quiet.enter_context(quiet_orbax())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (temporary, unfinished saves are ignored)."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # -------------------------------------------------------------------------- saving
    def save(self, step: int, state: dict, loader=None, force: bool = False) -> bool:
        """Starts saving ``state`` (and the loader position) at ``step`` if the interval says so
        (or ``force``); returns whether a save started. First checks that the previous save
        landed (raises `CheckpointSaveError` if it did not)."""
        self.check()
        if step % self.save_every and not force:
            return False
        self._preflight(step, state)
        items = {"state": ocp.args.StandardSave(_without_none(state))}
        if loader is not None:
            items["data"] = grain.checkpoint.CheckpointSave(loader)
        try:
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise anything)
            # orbax first waits for the previous save, and raises its error if it failed
            pending = self._pending
            failed = pending if pending is not None and not os.path.isdir(self.path(pending)) \
                else step
            raise self._save_error(failed, self._errors.last or one_line(e)) from None
        if started:
            self._pending = step
        return started

    def check(self):
        """Raises `CheckpointSaveError` when the last save has finished without landing on disk
        (a cheap poll while it still runs)."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._verify()

    def check_writable(self):
        """Raises `CheckpointSaveError` now if the folder cannot be written (so a run stops
        before its first step, not at its first save)."""
        self._preflight(None, {})

    def _preflight(self, step: int | None, state: dict):
        """Refuses to start a save into a folder that is not writable or lacks the space."""
        need = sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(state))
        problem = None
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.directory)
            os.close(fd)
            os.remove(probe)
            free = shutil.disk_usage(self.directory).free
            if free < need + need // 20 + (64 << 10):  # + metadata (arrays compress a bit)
                problem = (f"no space: {free / 2**20:.1f} MiB free on its disk, the checkpoint "
                           f"needs about {need / 2**20:.1f} MiB")
        except OSError as e:
            problem = f"the folder is not writable ({e.strerror or e})"
        if not _agree(problem is None):
            raise self._save_error(step, problem or "it failed on another process")

    def _verify(self):
        step, self._pending = self._pending, None
        reason = None
        try:
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            reason = one_line(e)
        if reason is None and os.path.isdir(self.path(step)):
            return
        raise self._save_error(step, reason or self._errors.last or
                               "orbax did not finalize it (see the log)")

    def _save_error(self, step: int, reason: str) -> CheckpointSaveError:
        """The error to raise for a failed save of ``step``; removes the save's temporary
        directory (an incomplete checkpoint that would only take space)."""
        good = self._steps_on_disk()
        last = (f"step {good[-1]} ({self.path(good[-1])})" if good else
                "none (the run starts from scratch when re-run)")
        if step is None:  # the check before training
            return CheckpointSaveError(f"cannot save checkpoints to {self.directory}: {reason}; "
                                       f"the last good checkpoint is {last}")
        self._failed, self._pending = True, None
        if jax.process_index() == 0:
            for tmp in glob.glob(glob.escape(self.path(step)) + ".orbax-checkpoint-tmp*"):
                settle(tmp)  # the writes still in flight end first
                shutil.rmtree(tmp, ignore_errors=True)
        return CheckpointSaveError(f"saving checkpoint step {step} to {self.directory} failed: "
                                   f"{reason}; the run stops here; the last good checkpoint "
                                   f"is {last}")

    def _steps_on_disk(self) -> list[int]:
        """Steps whose (finalized) directory exists, whatever orbax believes."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(self.path(int(n))))

    # -------------------------------------------------------------------------- restoring
    def has_data_state(self, step: int) -> bool:
        """Whether ``step`` holds this process's data iterator position (it does not when the
        checkpoint was written by a different number of processes)."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.directory, str(step), "data", name))

    def why_no_data_state(self, step: int) -> str:
        """Why ``step`` lacks this process's data iterator position (see ``has_data_state``),
        as the warning of a resume without it says: another process count, or none saved."""
        folder = os.path.join(self.directory, str(step), "data")
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        counts = sorted({n.rsplit("-of-", 1)[-1][:-len(".json")] for n in
                         (os.listdir(folder) if os.path.isdir(folder) else [])
                         if n.startswith("process_") and n.endswith(".json")})
        if counts:
            return (f"it was written by {' or '.join(counts)} process(es), this run has "
                    f"{jax.process_count()}")
        return f"{os.path.join(folder, name)} is missing"

    def restore(self, abstract_state: dict, loader=None, step: int | None = None) -> dict:
        """The state at ``step`` (default: latest), placed as ``abstract_state`` says (shapes,
        dtypes, shardings: it may be another mesh than the one that saved); restores the
        loader's position in place when given (see ``has_data_state``). Raises
        `CorruptCheckpointError` when the checkpoint cannot be read back and `CheckpointError`
        when it does not fit ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(self.path(step), f))]
        if not _agree(not missing):
            raise CorruptCheckpointError(f"{', '.join(missing) or 'a file'} is missing (an "
                                         "incomplete or damaged save)")
        items = {"state": ocp.args.StandardRestore(_without_none(abstract_state))}
        if loader is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(loader)
        error = None
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 (tensorstore raises bare Exceptions)
            error = e
        if not _agree(error is None):
            misfit = self._misfit(step, abstract_state)
            if misfit:
                raise CheckpointError(
                    f"checkpoint {self.path(step)} does not fit this run's state (a changed "
                    f"model, optimizer rules or EMA setting?): {misfit}") from error
            raise CorruptCheckpointError(one_line(error) if error is not None else
                                         "unreadable on another process") from None
        state = dict(restored["state"])
        return {**{k: None for k in abstract_state}, **state}

    def _misfit(self, step: int, abstract_state: dict) -> str | None:
        """What differs between the checkpoint's saved tree and ``abstract_state`` (None when
        they agree, or when the saved tree cannot be read: then the checkpoint is damaged)."""
        try:
            meta = ocp.StandardCheckpointHandler().metadata(
                epath.Path(self.path(step)) / "state")
        except Exception:  # noqa: BLE001
            return None
        saved = {_leaf_name(p): tuple(getattr(m, "shape", ()))
                 for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]}
        want = {_leaf_name(p): tuple(a.shape)
                for p, a in jax.tree_util.tree_flatten_with_path(_without_none(abstract_state))[0]}
        missing, extra = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
        shapes = sorted(k for k in set(want) & set(saved) if want[k] != saved[k])
        parts = [f"{what} {names[:4]}{' ...' if len(names) > 4 else ''}" for what, names in (
            ("not in the checkpoint:", missing), ("only in the checkpoint:", extra),
            ("other shapes (saved, wanted):", [(k, saved[k], want[k]) for k in shapes]))
            if names]
        return "; ".join(parts) or None

    def restore_newest_intact(self, abstract_state: dict, loader=None):
        """(state, step, data_restored) from the newest checkpoint that reads back; each newer
        one that does not is skipped with a one-line warning and moved to
        DIR/<step>.corrupt (so the run can save that step again). ``loader``'s position is
        restored when the checkpoint holds it for this process count (``data_restored``).
        (None, None, False) when there is no checkpoint; `CheckpointError` when none is
        intact or one does not fit the run."""
        skipped = []
        for step in sorted(self.all_steps(), reverse=True):
            data = loader if loader is not None and self.has_data_state(step) else None
            try:
                state = self.restore(abstract_state, data, step)
            except CorruptCheckpointError as e:
                log.warning("skipping checkpoint %s: corrupt or incomplete: %s", self.path(step), e)
                skipped.append((step, str(e)))
                continue
            for bad, _ in skipped:
                self._move_aside(bad)
            if skipped:
                log.warning("resuming from checkpoint %s, the newest intact one", self.path(step))
            return state, step, data is not None
        if skipped:
            raise CheckpointError(
                f"no intact checkpoint in {self.directory}: "
                + "; ".join(f"step {s}: {r}" for s, r in skipped)
                + "; move them away (or use a new --workdir) to start over")
        return None, None, False

    def _move_aside(self, step: int):
        if jax.process_index() == 0:
            dest, n = self.path(step) + CORRUPT_SUFFIX, 1
            while os.path.exists(dest):
                dest, n = f"{self.path(step)}{CORRUPT_SUFFIX}{n}", n + 1
            os.rename(self.path(step), dest)
            log.warning("moved the corrupt checkpoint %s to %s", self.path(step), dest)
        _sync(f"camclone_move_aside_{step}")
        self.manager.reload()

    def wait(self):
        """Blocks until pending saves are complete; raises `CheckpointSaveError` if one failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            step = self._pending
            raise self._save_error(step, self._errors.last or one_line(e)) from None
        if self._pending is not None:
            self._verify()

    def close(self):
        """Waits for pending saves (unless one already failed) and releases the manager."""
        try:
            if not self._failed:
                self.wait()
        finally:
            try:
                self.manager.close()
            except Exception as e:  # noqa: BLE001
                if not self._failed:
                    raise
                log.debug("closing the checkpoint manager after a failed save: %s", one_line(e))
            self._quiet.close()


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
    expected = flatten_params(params_lib.param_shapes(dit_config))
    if dit_config.concat == "channel":
        _, params = transformer_io.load_transformer(path)  # the base's own architecture
        params = expand_for_channel_concat(params, dit_config)
    elif is_converted_dir(path) and shardings is not None:
        flat_shard = flatten_params(shardings)
        abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=flat_shard[k])
                    for k, v in expected.items()}
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
        multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------------- export
def export_model(out: str, dit_config, params, *, extra_files: dict | None = None,
                 overwrite: bool = False, source: str = ""):
    """Writes the full param set as our converted transformer directory (readable by
    ``load_transformer``, the sampler and ``convert export``), plus small JSON side files
    (e.g. codec.json, text.json), atomically; every process calls it."""
    save_converted(out, transformer_io.KIND, dit_config.to_dict(), params, source=source,
                   overwrite=overwrite, extra_files=extra_files)
