"""Running an evaluation over many videos: parallel workers, per-video results, resume, progress.

`run_pairs(pairs, options, evaluator_class, workers, results_dir, resume, progress)` returns one
(entry, failure, features) per pair, in pair order, as `evaluator_class(options).run(pair)` does:

* workers > 1: the pairs are spread over that many processes (spawned, so each starts clean of
  the parent's JAX and thread pools; each builds its own evaluator);
* results_dir: every finished video is written there at once (`<name>-<key>.json`, its I3D
  features in `<name>-<key>.npz`; written atomically), so an interrupted run loses at most the
  videos in flight;
* resume: results already in results_dir are reused when they were computed for the same pair
  with the same options (a fingerprint of both is stored in each file); others are recomputed;
* progress: a bar on stderr after each video, with the count, failures and the time left
  (the wall time per video of this run so far, workers included, times the videos left).
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time

import numpy as np

from camclone_jax.convert.io import write_atomic

BAR_WIDTH = 24


def fingerprint(pair, options):
    """Hex key of a pair and the options that shape its result (not where results are written)."""
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k != "save_poses"}
    text = json.dumps([dataclasses.asdict(pair), opts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def result_stem(pair):
    """File stem of a pair's result: its name (made file-safe) and a hash of its paths."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", pair.name)[:80]
    key = hashlib.sha1(json.dumps(dataclasses.asdict(pair), sort_keys=True).encode()).hexdigest()[:10]
    return f"{safe}-{key}"


def save_result(results_dir, pair, options, result):
    """Writes one pair's (entry, failure, features) into results_dir."""
    entry, failure, features = result
    stem = os.path.join(results_dir, result_stem(pair))
    if features:
        buf = io.BytesIO()
        np.savez(buf, **features)
        write_atomic(stem + ".npz", buf.getvalue())
    record = {"fingerprint": fingerprint(pair, options), "entry": entry, "failure": failure,
              "features": sorted(features)}
    write_atomic(stem + ".json", json.dumps(record, default=_plain) + "\n")


def _plain(value):
    """JSON form of numpy scalars and arrays (bools stay bools)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_result(results_dir, pair, options):
    """The stored (entry, failure, features) of a pair, or None when absent or stale."""
    stem = os.path.join(results_dir, result_stem(pair))
    try:
        with open(stem + ".json") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint(pair, options):
        return None
    features = {}
    if record.get("features"):
        try:
            with np.load(stem + ".npz") as data:
                features = {k: data[k] for k in record["features"]}
        except (OSError, ValueError, KeyError):
            return None
    return record["entry"], record["failure"], features


class Progress:
    """A one-line progress bar with the time left, written to a stream after each video."""

    def __init__(self, total, resumed=0, stream=None):
        self.total, self.done, self.resumed, self.failed = total, resumed, resumed, 0
        self.stream = stream or sys.stderr
        self.start = time.monotonic()

    def time_left(self):
        """Seconds left (None before the first video of this run finishes)."""
        computed = self.done - self.resumed
        if computed == 0:
            return None
        return (time.monotonic() - self.start) / computed * (self.total - self.done)

    def update(self, name, failure):
        """One more video done (failure: its failure dict or None); prints the bar."""
        self.done += 1
        self.failed += failure is not None
        filled = int(BAR_WIDTH * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        left = self.time_left()
        status = "ok" if failure is None else f"FAILED ({failure['stage']}): {failure['reason']}"
        self.stream.write(f"[{bar}] {self.done}/{self.total}"
                          + (f" ({self.resumed} resumed)" if self.resumed else "")
                          + f", {self.failed} failed, {_clock(time.monotonic() - self.start)} elapsed, "
                          f"{'?' if left is None else _clock(left)} left | {name}: {status}\n")
        self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


_WORKER = {}  # the evaluator of a worker process


def _init_worker(evaluator_class, options):
    _WORKER["evaluator"] = evaluator_class(options)


def _run_in_worker(item):
    index, pair = item
    return index, _WORKER["evaluator"].run(pair)


def run_pairs(pairs, options, evaluator_class, workers=1, results_dir=None, resume=False,
              progress=False):
    """[(entry, failure, features)] of every pair, in order (see the module docstring)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if resume and results_dir is None:
        raise ValueError("resume needs a results folder")
    if results_dir is not None:
        os.makedirs(results_dir, exist_ok=True)
    results = [None] * len(pairs)
    if resume:
        for i, pair in enumerate(pairs):
            results[i] = load_result(results_dir, pair, options)
    todo = [(i, p) for i, p in enumerate(pairs) if results[i] is None]
    bar = Progress(len(pairs), resumed=len(pairs) - len(todo)) if progress else None

    def finish(index, result):
        results[index] = result
        if results_dir is not None:
            save_result(results_dir, pairs[index], options, result)
        if bar is not None:
            bar.update(pairs[index].name, result[1])

    if workers == 1 or len(todo) <= 1:
        evaluator = evaluator_class(options) if todo else None
        for index, pair in todo:
            finish(index, evaluator.run(pair))
        return results
    context = multiprocessing.get_context("spawn")
    with _ignoring_sigint():  # the workers start ignoring Ctrl-C: it stops the parent, which
        pool = context.Pool(min(workers, len(todo)), initializer=_init_worker,  # ends them
                            initargs=(evaluator_class, options))
    with pool:
        for index, result in pool.imap_unordered(_run_in_worker, todo):
            finish(index, result)
    return results


@contextlib.contextmanager
def _ignoring_sigint():
    """SIGINT ignored while worker processes start (they inherit it, so a Ctrl-C in the
    terminal reaches only the parent, which ends the pool: no traceback per worker)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
