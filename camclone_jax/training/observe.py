"""Training observability: step FLOPs and MFU, TensorBoard + JSONL metrics, a progress line.

MFU = (FLOPs of one compiled step on one device, from XLA's cost analysis) / (step seconds x
the device's peak FLOP/s). The peak table holds dense bf16 tensor-core / MXU figures per
device (vendor datasheets); ``peak_flops`` in the config overrides it (e.g. for fp32 runs or
unlisted devices). CPUs have no entry, so MFU is reported only with an override there.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax

# Dense bf16 peak FLOP/s per device (no sparsity), matched on jax's device_kind.
PEAK_FLOPS = (
    ("H100", 989e12), ("H800", 989e12), ("H200", 989e12), ("H20", 148e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v5", 459e12), ("TPU v4", 275e12),
)


def peak_flops(device=None, override: float = 0.0) -> float | None:
    """Peak FLOP/s of ``device`` (default: the first) from the table, or ``override`` if > 0."""
    if override and override > 0:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return flops
    return None


def compiled_flops(compiled) -> float | None:
    """FLOPs per device of one call of a compiled (``jit(...).lower(...).compile()``) function."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per partition
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def mfu(flops_per_device: float | None, step_seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None when a factor is unknown."""
    if not flops_per_device or not peak or step_seconds <= 0:
        return None
    return flops_per_device / (step_seconds * peak)


class MetricWriter:
    """Scalars to TensorBoard event files (WORKDIR/tb) and WORKDIR/metrics.jsonl, process 0."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled and jax.process_index() == 0
        self._tb = self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # process 0 only: its import is slow
            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, step: int, scalars: dict):
        """Records ``scalars`` (name -> number; None values skipped) at ``step``."""
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items() if v is not None}
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()

    def flush(self):
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


class Progress:
    """One status line per step on a terminal (overwritten), or every ``every`` steps in logs."""

    def __init__(self, total: int, start: int = 0, every: int = 10, stream=None):
        self.total, self.every = total, max(every, 1)
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = jax.process_index() == 0
        self._t0, self._start = time.perf_counter(), start

    def update(self, step: int, metrics: dict):
        """Shows step, loss, step time, tokens/s, MFU and the ETA."""
        if not self.enabled or not (self.tty or step % self.every == 0 or step == self.total):
            return
        done = step - self._start
        elapsed = time.perf_counter() - self._t0
        # the latest window's step time (compilation and validation left out), else the mean
        per_step = metrics.get("step_s") or elapsed / max(done, 1)
        eta = per_step * (self.total - step)
        parts = [f"step {step}/{self.total}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("step_s", "{:.3f} s/step"),
                         ("tokens_per_s", "{:,.0f} tok/s"), ("mfu", "MFU {:.1%}")):
            if metrics.get(key) is not None:
                parts.append(fmt.format(metrics[key]))
        parts.append(f"eta {eta:.0f} s")
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if step == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str):
        """A line of its own (e.g. a validation result)."""
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()
