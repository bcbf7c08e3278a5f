r"""CamClone training: `python -m camclone_jax.train --config=configs/X.py[:arg] --workdir=DIR`.

``train_and_evaluate(config, workdir)`` is the whole job (a notebook calls it too); ``main``
only parses flags (``--config.key=value`` overrides; an unknown key is an error) and is what
``python -m camclone_jax.train`` runs. Phases, in order: processes and mesh; data; base model, parameter split and
optimizer; shardings and the compiled step; checkpoint restore; the loop (checkpoints,
metrics, validation, SIGTERM); export, the closing sample videos and clone check (``outputs``).

Re-running the same command resumes from the newest intact checkpoint in WORKDIR/checkpoints
with the same data order, noise and RNG, so N + N steps equal 2N uninterrupted steps. One job
at a time holds the workdir (WORKDIR/train.lock, ``workdir_lock``). SIGTERM / SIGINT
save a checkpoint at the current step and return cleanly (status "preempted").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_flags

from camclone_jax import distributed, errors, sharding, tasks
from camclone_jax.data import pipeline
from camclone_jax.models import params as params_lib
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.dit import DiT, sequence_lengths
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import observe, optim
from camclone_jax.training import step as step_lib
from camclone_jax.training import outputs, workdir_lock
from camclone_jax.training.data import (ImageEncoder, clip_geometry, data_codec, device_batch_of,
                                        ensure_dataset, pipeline_config, wallpaper_mix_source,
                                        wallpaper_sources)

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf (the update was not applied)."""


# faults the command line reports as one line and exit status 2 (checkpoint and lock errors
# are `errors.UserError`s)
CLI_ERRORS = errors.USER_ERRORS + (pipeline.BadDataError, NonFiniteLossError)


# ------------------------------------------------------------------------------ the job
def _mesh_devices(n: int):
    """The first ``n`` devices (0: all)."""
    if not n:
        return None
    if jax.process_count() > 1:
        raise ValueError("mesh_devices must be 0 (all devices) in a multi-process run")
    if n > jax.device_count():
        raise ValueError(f"mesh_devices={n} but only {jax.device_count()} devices are present")
    return jax.devices()[:n]


def _data_axes(mesh):
    return tuple(a for a in ("data", "fsdp") if mesh.shape.get(a, 1) > 1) or None


def _check_batch(config, mesh):
    data_size = mesh.shape["data"] * mesh.shape["fsdp"]
    b, a = config.batch_size, config.accum_steps
    if b % (jax.process_count() * a) or (b // a) % data_size:
        raise ValueError(f"batch_size {b} must split into {a} micro-batches (accum_steps) whose "
                         f"size the {data_size} data-parallel devices divide, and into "
                         f"{jax.process_count()} processes")


def _tokens_per_sample(dit_cfg: DiTConfig, data_cfg, codec) -> int:
    """Tokens the DiT sees per training example (all segments, after latent drop)."""
    frames, height, width = clip_geometry(data_cfg)
    if codec is not None:
        f, h, w = codec.latent_shape(frames, height, width)
    else:  # Wan VAE geometry
        f, h, w = 1 + (frames - 1) // 4, height // 8, width // 8
    return sum(sequence_lengths(dit_cfg, (1, f, h, w, 1), train=True).values())


class _SignalFlag:
    """Sets a flag on SIGTERM/SIGINT while active (main thread only); restores handlers."""

    def __init__(self):
        self.raised, self._old = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def any_process(self) -> bool:
        """True when a signal reached this or (multi-process) any other process."""
        flag = self.raised is not None
        if jax.process_count() > 1:
            flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
        return flag


def _config_json(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _check_resume(workdir: str, config):
    """A workdir belongs to one model and parameter split: refuse to resume another."""
    record = ckpt_lib.read_run_record(workdir)
    if record is None:
        return
    old, new = record["config"], _config_json(config)
    arch = ("dim", "ffn_dim", "num_layers", "num_heads", "in_channels", "out_channels",
            "text_dim", "image_dim", "patch_size", "concat", "spatial_attn", "prediction")
    for key in arch:
        if old["model"].get(key) != new["model"].get(key):
            raise ckpt_lib.CheckpointError(
                f"{workdir} holds a run with model.{key}={old['model'].get(key)!r}, the config "
                f"says {new['model'].get(key)!r}; use a new --workdir")
    if old["optim"]["rules"] != new["optim"]["rules"]:
        raise ckpt_lib.CheckpointError(f"{workdir} was trained with optimizer rules "
                                       f"{old['optim']['rules']}; use a new --workdir")


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains as ``config`` says in ``workdir`` (resuming there); returns a summary dict with
    the status ("done" or "preempted"), steps, losses and timings. The workdir is locked for
    the whole job (``workdir_lock``: a second job on it raises ``WorkdirLockedError``)."""
    _check_numbers(config)
    errors.check_output_dir(workdir, "--workdir")  # before anything is created or loaded
    workdir = os.path.abspath(workdir)
    created = not os.path.exists(workdir)
    distributed.initialize()  # multi-process setup from the environment, if any
    os.makedirs(workdir, exist_ok=True)
    try:
        lock = workdir_lock.acquire_for_run(workdir)
        try:
            return _train(config, workdir)
        finally:
            if lock is not None:
                lock.release()
    except BaseException:
        if created and jax.process_count() == 1:
            _remove_failed_start(workdir)
        raise


# config numbers and their lowest value (a key a config lacks is not checked)
_MINIMUMS = {"total_steps": 1, "batch_size": 1, "accum_steps": 1, "log_every": 1,
             "checkpoint.every": 1, "checkpoint.keep": 1, "eval_every": 0, "eval_batches": 0,
             "seed": 0, "mesh_devices": 0, "peak_flops": 0, "optim.lr": 0,
             "optim.warmup_steps": 0, "optim.weight_decay": 0, "optim.clip_norm": 0,
             "data.frames": 1, "data.height": 1, "data.width": 1, "data.frame_stride": 1,
             "data.text_len": 1, "data.num_workers": 0, "data.max_bad_records": 0}
_FRACTIONS = ("data.v2v_ratio", "objective.text_drop_prob", "optim.ema_decay", "optim.b1",
              "optim.b2", "optim.end_factor")  # in [0, 1]


def _check_numbers(config):
    """Raises ValueError naming the ``--config.key`` of a negative or nonsensical number."""
    def value(key):
        node = config
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        return node

    for key, low in _MINIMUMS.items():
        if isinstance(value(key), (int, float)) and not value(key) >= low:
            raise ValueError(f"--config.{key}={value(key)} must be >= {low}")
    for key in _FRACTIONS:
        if isinstance(value(key), (int, float)) and not 0 <= value(key) <= 1:
            raise ValueError(f"--config.{key}={value(key)} must be in [0, 1]")


def _remove_failed_start(workdir: str):
    """Removes the workdir a failed start created, unless it holds a checkpoint (then the run
    got far enough that its files are worth keeping)."""
    ckpts = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)):
        return
    shutil.rmtree(workdir, ignore_errors=True)


def _train(config, workdir: str) -> dict:
    """The job of ``train_and_evaluate`` in a locked, existing ``workdir``."""
    _check_resume(workdir, config)

    # ------------------------------------------------------------------ mesh and settings
    mesh = sharding.make_mesh(dict(config.mesh), _mesh_devices(config.mesh_devices))
    rules = tuple(tuple(r) for r in config.sharding_rules) if config.get("sharding_rules") \
        else sharding.DEFAULT_RULES
    dit_cfg = DiTConfig.from_dict(dict(config.model))
    codec = data_codec(config.data)
    text_len = config.data.text_len
    step_cfg = step_lib.StepConfig(accum_steps=config.accum_steps, text_len=text_len,
                                   nonfinite=config.nonfinite, ema_decay=config.optim.ema_decay,
                                   **dict(config.objective))
    step_cfg.validate()
    _check_batch(config, mesh)
    data_axes = _data_axes(mesh)
    image_encoder = ImageEncoder(config.clip_checkpoint, tasks.first_frame_rule(
        step_cfg.conditioning, step_cfg.v2v_first_frame)) if dit_cfg.image_dim else None

    def device_batch(raw):
        return device_batch_of(raw, mesh, data_axes, image_encoder)

    # ------------------------------------------------------------------ data
    wallpaper = config.data.kind == "wallpaper"
    if step_cfg.new_content_weight != 1.0 and not wallpaper:
        raise ValueError(
            f"objective.new_content_weight={step_cfg.new_content_weight} weighs the content the "
            "first frame did not show, which only the wallpaper source marks (data.kind="
            f"'wallpaper'), not data.kind={config.data.kind!r}: leave it at 1.0")
    mix_source = wallpaper_mix_source(config)  # checked before any rendering
    paths = wallpaper_sources(config) if wallpaper else ensure_dataset(config.data, workdir)
    train_path, val_path = paths["train"], paths["val"]
    per_host = config.batch_size // jax.process_count()
    loader = pipeline.make_loader(train_path, pipeline_config(config.data, per_host, config.seed),
                                  mix_source=mix_source)
    val_batches = []
    if val_path and config.eval_every:
        val_loader = pipeline.make_loader(val_path, pipeline_config(
            config.data, per_host, config.seed, held_out=True))
        for _, batch in zip(range(config.eval_batches), val_loader):
            val_batches.append(batch)
        val_loader.close()

    # ------------------------------------------------------------------ model and optimizer
    logical = params_lib.logical_specs(dit_cfg)
    param_sh = sharding.logical_sharding(logical, mesh, rules)  # NamedSharding tree
    base_path = config.base_checkpoint or os.path.join(workdir, "base")
    if not config.base_checkpoint and not os.path.exists(base_path):
        params = jax.jit(lambda k: params_lib.init_params(dit_cfg, k), out_shardings=param_sh)(
            jax.random.PRNGKey(config.seed))
        ckpt_lib.save_base(base_path, dit_cfg, params)
    else:
        params = ckpt_lib.load_base(base_path, dit_cfg, param_sh)
    ckpt_lib.write_run_record(workdir, _config_json(config), base_path)
    rules_opt = [tuple(r) for r in config.optim.rules]
    labels = optim.label_params(params, rules_opt)
    trainable, frozen = step_lib.split_params(params, labels)
    del params
    frozen_dtype = jnp.dtype(config.frozen_dtype)
    frozen = jax.tree_util.tree_map(lambda x: x.astype(frozen_dtype), frozen)
    train_sh, frozen_sh = step_lib.split_params(param_sh, labels)
    schedule = optim.warmup_cosine(config.optim.lr, config.optim.warmup_steps,
                                   config.total_steps if config.optim.schedule == "cosine" else 0,
                                   config.optim.end_factor)
    tx = optim.make_optimizer(trainable, rules_opt, schedule, b1=config.optim.b1,
                              b2=config.optim.b2, weight_decay=config.optim.weight_decay,
                              clip_norm=config.optim.clip_norm or None)

    # ------------------------------------------------------------------ shardings and step
    replicated = NamedSharding(mesh, PartitionSpec())
    ema = step_cfg.ema_decay > 0
    state_sh = step_lib.state_shardings(tx, trainable, train_sh, replicated, ema)
    init_fn = jax.jit(lambda tr: step_lib.init_state(tr, tx, config.seed, ema),
                      out_shardings=state_sh)
    abstract_state = jax.eval_shape(init_fn, trainable)
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_sh)

    def constrain(y):  # micro-batches [n, b/n, ...]: batch on axis 1
        spec = PartitionSpec(None, data_axes, *([None] * (y.ndim - 2)))
        return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))

    step_codec = codec if config.data.kind == "mp4" else None  # latent records: encoded
    step_fn = step_lib.make_train_step(flax_module(dit_cfg), tx, step_cfg, codec=step_codec,
                                       batch_constraint=constrain, learning_rate=schedule)
    eval_losses = step_lib.make_eval_losses(flax_module(dit_cfg), step_cfg, codec=step_codec,
                                            noise_levels=tuple(config.eval_t))

    def eval_fn(trainable, frozen, batch, rng):  # scalar sums: reduced on the devices
        return step_lib.eval_sums(eval_losses(trainable, frozen, batch, rng), batch["task"])

    # ------------------------------------------------------------------ checkpoint restore
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         save_every=config.checkpoint.every,
                                         keep=config.checkpoint.keep,
                                         async_save=config.checkpoint.async_save)
    checkpointer.check_writable()  # a read-only or full folder stops the run before step 1
    state, start, data_restored = checkpointer.restore_newest_intact(abstract_state, loader)
    if start is not None and data_restored:
        log.info("resumed from step %d", start)
    elif start is not None:  # no position for this process count: the global order is the same
        loader.close()
        loader = pipeline.make_loader(train_path, pipeline_config(config.data, per_host,
                                                                   config.seed), skip_batches=start)
        log.warning("resumed from step %d without its data-iterator position (%s): the data "
                    "restarts at global batch %d (exact unless bad records were skipped)",
                    start, checkpointer.why_no_data_state(start), start)
    else:  # no checkpoint (a corrupt one is skipped above, and none intact is an error)
        state, start = init_fn(trainable), 0
    del trainable

    writer = observe.MetricWriter(workdir)
    progress = observe.Progress(config.total_steps, start, every=config.log_every)
    summary = {"status": "done", "start_step": start, "losses": [], "val_losses": {}}
    try:
        with sharding.use_mesh(mesh), nn_rules(rules), _SignalFlag() as signals:
            raw = next(loader)
            summary["batch_indices"] = [raw["index"].tolist()]  # this host's records per step
            first = device_batch(raw)
            batch_sh = jax.tree_util.tree_map(lambda x: x.sharding, first)
            train = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                            out_shardings=(state_sh, replicated), donate_argnums=(0,))
            evaluate = jax.jit(eval_fn)
            t0 = time.perf_counter()
            compiled = train.lower(state, frozen, first).compile()
            summary["compile_s"] = time.perf_counter() - t0
            flops = observe.compiled_flops(compiled)
            peak = observe.peak_flops(override=config.peak_flops)
            tokens = config.batch_size * _tokens_per_sample(dit_cfg, config.data, codec)
            summary.update(step_flops_per_device=flops, tokens_per_step=tokens)

            step, batch, pending = start, first, []
            if val_batches and start == 0:  # the untrained model's loss, for comparison
                _validate(0, evaluate, state, frozen, val_batches, device_batch, config,
                          summary, writer, progress)
            window_t, window_steps = time.perf_counter(), 0
            while step < config.total_steps:
                state, metrics = compiled(state, frozen, batch)
                step += 1
                window_steps += 1
                pending.append((step, metrics))
                last = step == config.total_steps
                stop = signals.any_process()
                if step % config.log_every == 0 or last or stop or \
                        step % config.checkpoint.every == 0:
                    fetched = jax.device_get([m for _, m in pending])
                    step_s = (time.perf_counter() - window_t) / window_steps
                    for (s, _), m in zip(pending, fetched):
                        if not m["finite"]:
                            _on_nonfinite(s, m, config, checkpointer, summary)
                        summary["losses"].append((s, float(m["loss"])))
                    m = fetched[-1]
                    scalars = {"loss": float(np.mean([f["loss"] for f in fetched])),
                               "grad_norm": float(m["grad_norm"]),
                               "learning_rate": float(m.get("learning_rate", 0.0)),
                               "step_s": step_s, "tokens_per_s": tokens / step_s,
                               "mfu": observe.mfu(flops, step_s, peak)}
                    writer.write(step, scalars)
                    progress.update(step, scalars)
                    pending, window_t, window_steps = [], time.perf_counter(), 0
                    summary["step_s"] = step_s
                if val_batches and (step % config.eval_every == 0 or last):
                    _validate(step, evaluate, state, frozen, val_batches, device_batch, config,
                              summary, writer, progress)
                    window_t = time.perf_counter()
                if stop:
                    checkpointer.save(step, state, loader, force=True)
                    summary["status"] = "preempted"
                    progress.message(f"{signals.raised or 'signal'}: saved step {step}, exiting")
                    break
                checkpointer.save(step, state, loader, force=last)
                if not last:
                    raw = next(loader)
                    summary["batch_indices"].append(raw["index"].tolist())
                    batch = device_batch(raw)
            summary["step"] = step
            checkpointer.wait()
            if summary["status"] == "done" and config.export:
                outputs.export(workdir, config, dit_cfg, state, frozen, codec, step)
                summary["export"] = os.path.join(workdir, "export")
    finally:
        checkpointer.close()
        writer.close()
        loader.close()
    if summary["status"] == "done":
        summary.update(outputs.closing(workdir, config, paths["pixels"]))
    return summary


def flax_module(dit_cfg):
    return DiT(dit_cfg)


def nn_rules(rules):
    return nn.logical_axis_rules(rules)


def _on_nonfinite(step, metrics, config, checkpointer, summary):
    summary.setdefault("nonfinite_steps", []).append(step)
    if config.nonfinite == "stop":
        checkpointer.wait()
        raise NonFiniteLossError(
            f"non-finite loss {float(metrics['loss'])} (grad norm {float(metrics['grad_norm'])}) "
            f"at step {step}; the update was not applied and the last good checkpoint is step "
            f"{checkpointer.latest_step()}. Lower the learning rate, check the data, or set "
            "nonfinite='skip'")
    log.warning("non-finite loss at step %d: update skipped", step)


def _validate(step, evaluate, state, frozen, val_batches, device_batch, config, summary,
              writer, progress):
    """The validation loss and reference-use gaps over the held-out batches (fixed noise
    levels and noise), logged (metrics.jsonl, TensorBoard, the progress line) and kept in the
    summary (``val_losses``, ``val_gaps``)."""
    rng = jax.random.PRNGKey(config.seed + 1)
    params = state["ema"] if state["ema"] is not None else state["params"]
    sums = [jax.device_get(evaluate(params, frozen, device_batch(b), jax.random.fold_in(rng, i)))
            for i, b in enumerate(val_batches)]
    metrics = step_lib.eval_metrics(sums)
    summary["val_losses"][step] = metrics["val_loss"]
    gaps = {k: v for k, v in metrics.items() if k != "val_loss"}
    if gaps:
        summary.setdefault("val_gaps", {})[step] = gaps
    writer.write(step, metrics)
    line = f"step {step}: validation loss {metrics['val_loss']:.4f}"
    if gaps:
        line += (f", camera gap {gaps['val_camera_gap']:+.4f} (I2V "
                 f"{gaps['val_camera_gap_i2v']:+.4f}, V2V {gaps['val_camera_gap_v2v']:+.4f}), "
                 f"content gap {gaps['val_content_gap']:+.4f}")
    progress.message(line)


def main(argv=None):
    """The command line: ``--config`` (ml_collections, ``--config.key=value`` overrides; an
    unknown key is an error) and ``--workdir``; prints the summary as one JSON document. Flag
    and config errors, and the run's `CLI_ERRORS`, are one line and exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    parsed = flags.FlagValues()  # this call's own flags: main can run again in one process

    def run(argv):
        del argv
        if not flags.FLAGS["verbosity"].present:  # orbax and grain log a lot at INFO
            absl_logging.set_verbosity(absl_logging.WARNING)
        with errors.exit_on_user_error(CLI_ERRORS):  # one clear line, no traceback
            result = train_and_evaluate(parsed.config, parsed.workdir)
        skip = ("losses", "batch_indices", "clone_check_lines")
        print(json.dumps({k: v for k, v in result.items() if k not in skip}, indent=1,
                         default=str))
        sys.stdout.flush()  # stdout stays one JSON document; the closing lines go to stderr
        for line in result.get("clone_check_lines", []):
            print(line, file=sys.stderr)

    app.run(run, argv=argv, flags_parser=lambda args: _parse_flags(parsed, args))


def _parse_flags(parsed: flags.FlagValues, argv):
    """Defines ``--config`` and ``--workdir`` in ``parsed`` (next to absl's own flags) and
    parses ``argv``; absl's flag errors, and ml_collections' errors in a ``--config.key``
    override or the config file, are one line and exit status 2 (absl: a usage text, 1)."""
    config_flags.DEFINE_config_file("config", None, "ml_collections config file "
                                    "(configs/*.py[:arg])", flag_values=parsed,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "run directory (checkpoints, logs, export)",
                        flag_values=parsed)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=parsed)
    parsed.append_flag_values(flags.FLAGS)  # --verbosity, --help, ...: absl's own
    # ml_collections loads the file as module "config_config" with load_module, which runs it
    # inside a module of that name left by an earlier main: an empty file would inherit its
    # get_config
    sys.modules.pop("config_config", None)
    try:
        rest = parsed(argv)
        parsed.config.get("seed")  # a config file that failed to load raises here
    except flags.Error as e:  # absl names the flag
        sys.exit(errors.report(e))
    except (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError) as e:
        sys.exit(errors.report(errors.UserError(_config_flag_error(argv, e))))
    flags.FLAGS.mark_as_parsed()
    return rest


def _config_flag_error(argv, error: BaseException) -> str:
    """The message of an error ml_collections raised while applying ``--config`` or a
    ``--config.key=value`` override; an unknown key names its flag and the suggestion."""
    cause = error
    while not isinstance(cause, KeyError) and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, KeyError):  # the file: missing, a syntax error, ... (innermost)
        path = next((a.split("=", 1)[-1] for a in argv[1:] if a.startswith("--config=")), "")
        return f"--config {path}: {errors.message(cause)}".replace(" :", ":")
    first, _, hint = errors.message(cause).partition("; ")  # "'lrr'; Did you mean "lr"...?"
    key = first.strip("'\"")
    names = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    name = next((n for n in names if key in n.split(".")[1:]), "--config")
    return f"{name}: the config has no key {key!r}" + (f" ({hint})" if hint else "")
