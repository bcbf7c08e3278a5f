"""Reading and writing weight files without running foreign code.

Readers return flat ``{key: np.ndarray}`` state dicts in the PyTorch key layout:
  * safetensors: parsed here directly (8-byte little-endian header length, a JSON header of
    ``{key: {dtype, shape, data_offsets}}``, then raw little-endian bytes), so bf16 files load
    without torch (as ``ml_dtypes.bfloat16``);
  * a diffusers directory: ``*.safetensors.index.json`` (sharded) or a single ``*.safetensors``;
  * ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``: ``torch.load(weights_only=True)``, which refuses
    pickles that would run code; such a file is rejected with a message, never unpickled blindly.
    Lightning/DeepSpeed wrappers (``state_dict``, ``module``) are unwrapped.

Our converted models are written as a directory holding ``config.json`` (the kind of model and
its config) and ``params/`` (an orbax checkpoint of the plain param pytree). Every writer builds
its output beside the destination and renames it into place, so an error or an interrupt never
leaves a half-written result.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import struct
import sys
import time
import warnings
from typing import Iterator, Mapping

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from camclone_jax.utils import atomic_dir, atomic_file, flatten_params, read_json
# re-exported for eval/batch.py, which still imports it from here (atomic writes live in utils)
from camclone_jax.utils import write_atomic  # noqa: F401

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_WRAPPER_KEYS = ("state_dict", "module", "model_state_dict")


class WeightFileError(ValueError):
    """A weight file or directory that cannot be read as a state dict."""


# ----------------------------------------------------------------------------------- safetensors
def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads one .safetensors file into numpy arrays (bf16 kept as ml_dtypes.bfloat16)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise WeightFileError(f"{path}: too short to be a safetensors file ({len(raw)} bytes)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > len(raw) - 8:
        raise WeightFileError(f"{path}: header length {header_len} exceeds the file size")
    try:
        header = json.loads(raw[8:8 + header_len])
    except ValueError as e:
        raise WeightFileError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{path}: the safetensors header is a JSON {type(header).__name__}, "
                              "not a map of tensor names")
    body = memoryview(raw)[8 + header_len:]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end, shape, dtype = _tensor_entry(path, key, info, len(body))
        out[key] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).copy()
    return out


def _tensor_entry(path: str, key: str, info, body_size: int):
    """(start, end, shape, dtype) of one header entry, checked against the file's bytes."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise WeightFileError(f"{path}: tensor {key!r} lacks dtype, shape or data_offsets in "
                              "the safetensors header")
    if info["dtype"] not in _ST_DTYPES:
        raise WeightFileError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
    shape, offsets = info["shape"], info["data_offsets"]
    ints = lambda v: isinstance(v, list) and all(  # noqa: E731
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
    if not ints(shape) or not ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise WeightFileError(f"{path}: tensor {key!r} has a malformed shape {shape!r} or "
                              f"data_offsets {offsets!r} in the safetensors header")
    start, end = offsets
    if end > body_size:
        raise WeightFileError(f"{path}: tensor {key!r} runs past the end of the file (truncated?)")
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - start != need:
        raise WeightFileError(f"{path}: tensor {key!r}: the header's byte range [{start}, {end}) "
                              f"holds {end - start} bytes, its shape {shape} of {info['dtype']} "
                              f"needs {need}")
    return start, end, shape, dtype


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None = None):
    """Writes a .safetensors file atomically; keys are sorted, data 8-byte aligned."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
    blobs, offset = [], 0
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        if arr.dtype not in _ST_NAMES:
            raise WeightFileError(f"cannot write {key!r}: dtype {arr.dtype} has no safetensors name")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {"dtype": _ST_NAMES[arr.dtype], "shape": list(arr.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for data in blobs:
                f.write(data)


# ------------------------------------------------------------------------------------ torch pickles
def read_torch_file(path: str) -> dict[str, np.ndarray]:
    """Reads a .pth/.ckpt with ``torch.load(weights_only=True)``; code-running pickles are refused."""
    try:
        import torch  # optional (the [torch] extra): only .pth / .ckpt files need it
    except ImportError:
        raise WeightFileError(
            f"{path}: reading PyTorch pickles needs torch; install camclone_jax[torch] "
            "or convert the file to .safetensors first") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError or RuntimeError variants here
        raise WeightFileError(
            f"{path}: refused to load: it is not a plain tensor checkpoint that loads with "
            f"weights_only=True ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Re-save it "
            "as a state dict of tensors or as .safetensors from a trusted environment.") from None
    while isinstance(obj, dict):
        wrapper = next((k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. lightning hyper-parameters stored beside the weights
        if value.dtype == torch.bfloat16:
            out[key] = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = value.numpy()
    if not out:
        raise WeightFileError(f"{path}: holds no tensors")
    return out


# ------------------------------------------------------------------------------------ any source
def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a state dict from a safetensors file, a torch file, or a diffusers directory."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weight file or directory: {path}")
    if os.path.isdir(path):
        return _read_directory(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(TORCH_SUFFIXES):
        return read_torch_file(path)
    raise WeightFileError(
        f"{path}: unknown weight file type; expected .safetensors, one of {TORCH_SUFFIXES}, "
        "or a diffusers model directory")


def _read_directory(path: str) -> dict[str, np.ndarray]:
    """Reads a diffusers-style model directory (sharded index or single safetensors)."""
    names = sorted(os.listdir(path))
    index = [n for n in names if n.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(path, index[0])) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not os.path.exists(os.path.join(path, s))]
        if missing:
            raise WeightFileError(f"{path}: index names shard files that are missing: {missing}")
        out = {}
        for shard in shards:
            out.update(read_safetensors(os.path.join(path, shard)))
        absent = sorted(set(weight_map) - set(out))
        if absent:
            raise WeightFileError(f"{path}: keys listed in the index but absent from shards: {absent[:10]}")
        return out
    files = [n for n in names if n.endswith(".safetensors")]
    if len(files) == 1:
        return read_safetensors(os.path.join(path, files[0]))
    raise WeightFileError(
        f"{path}: expected one *.safetensors file or a *.safetensors.index.json, found {files or 'none'}")


# ------------------------------------------------------------------------------ key bookkeeping
def check_state_dict(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple], what: str):
    """Raises one error naming every unknown, missing and mis-shaped key of ``state``."""
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    misshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                 for k in sorted(set(state) & set(expected))
                 if tuple(state[k].shape) != tuple(expected[k])]
    problems = []
    if unknown:
        problems.append(f"unknown keys ({len(unknown)}): {unknown[:20]}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}): {misshaped[:20]}")
    if problems:
        raise WeightFileError(f"{what} does not match the model config:\n  " + "\n  ".join(problems))


def nonfinite_params(params: Mapping) -> list[str]:
    """Paths of the floating-point arrays of ``params`` that hold NaN or inf."""
    bad = []
    for key, value in flatten_params(params).items():
        arr = np.asarray(value)
        if arr.dtype.kind in "iub" or arr.dtype == object:
            continue
        if not np.all(np.isfinite(arr.astype(np.float32))):
            bad.append(key)
    return bad


def write_pytorch_weights(path: str, state: Mapping[str, np.ndarray], *,
                          config_json: dict | None = None, weights_name: str = "",
                          overwrite: bool = False):
    """Writes exported weights for the PyTorch world, atomically.

    With ``config_json``: a model directory (``config.json`` + ``weights_name`` safetensors), as
    diffusers / transformers ``from_pretrained`` read it. Without: one .safetensors file.
    """
    if config_json is None:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite to replace it")
        write_safetensors(path, state, {"format": "pt"})
        return
    with atomic_dir(path, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config_json, f, indent=2)
        write_safetensors(os.path.join(tmp, weights_name), state, {"format": "pt"})


# --------------------------------------------------------------------- our converted directory
# ------------------------------------------------------------------------------ orbax's errors
def one_line(error: BaseException, limit: int = 300) -> str:
    """The innermost cause of ``error`` in one line (tensorstore's own message, not the
    150-line spec orbax wraps around it)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class OrbaxErrors(logging.Filter):
    """Keeps the one-line cause of orbax's logged errors (each a long traceback) in ``last``
    and drops those records: the caller reports the failure once, itself."""

    def __init__(self):
        super().__init__()
        self.last, self.last_error = None, None

    def filter(self, record):
        if record.levelno >= logging.ERROR and "orbax" in record.pathname and record.exc_info:
            self.last_error = record.exc_info[1]
            self.last = one_line(self.last_error)
            return False
        return True


def _closed_loop_noise(unraisable) -> bool:
    """A tensorstore write or read that finished after orbax closed the event loop it was
    started from (orbax closes it as soon as one operation fails), or one of orbax's
    serialization coroutines that failed again as it was collected after the call that started
    it had failed (a read of a corrupt checkpoint: the call reported that fault): nothing to
    report."""
    if isinstance(unraisable.exc_value, RuntimeError) and \
            str(unraisable.exc_value) == "Event loop is closed":
        return True
    name = getattr(unraisable.object, "__qualname__", "")
    return asyncio.iscoroutine(unraisable.object) and re.match(_ORBAX_COROUTINES, name) is not None


_HOOKS = {"previous": sys.unraisablehook}


def _orbax_futures_noise(record) -> bool:
    """False (drop it) for asyncio's 'exception was never retrieved' of an orbax write that
    failed after another one had (orbax reports the first; these are the same fault)."""
    text = record.getMessage()
    return not ("exception was never retrieved" in text and ("orbax" in text or "OCDBT" in text))


# tensorstore coroutines of orbax's serialization that a failed call left unstarted: Python
# warns of each when it is collected (also at exit, as 'sys:1: RuntimeWarning: ...')
_ORBAX_COROUTINES = (r"(async_serialize|async_deserialize|_read_shard|"
                     r"_read_array_index_and_device_put|_read_and_create_array)")
_ORBAX_UNAWAITED = rf"coroutine '{_ORBAX_COROUTINES}[^']*' was never awaited"


def _unraisable_hook(unraisable):
    if not _closed_loop_noise(unraisable):
        _HOOKS["previous"](unraisable)


@contextlib.contextmanager
def quiet_orbax() -> Iterator[OrbaxErrors]:
    """While active, orbax's logged errors are dropped (the yielded filter keeps the last
    one's cause in one line); from the first use on, the 'Event loop is closed' and 'exception
    was never retrieved' reports of tensorstore operations that outlive a failed orbax call
    are dropped too (they come from background threads and the garbage collector, also after
    the call has returned), and so are the 'coroutine ... was never awaited' warnings of its
    writes that never started."""
    if sys.unraisablehook is not _unraisable_hook:
        _HOOKS["previous"], sys.unraisablehook = sys.unraisablehook, _unraisable_hook
        logging.getLogger("asyncio").addFilter(_orbax_futures_noise)
        warnings.filterwarnings("ignore", message=_ORBAX_UNAWAITED, category=RuntimeWarning)
    errors = OrbaxErrors()
    logger = logging.getLogger("absl")
    logger.addFilter(errors)
    try:
        yield errors
    finally:
        logger.removeFilter(errors)


def save_converted(path: str, kind: str, config: Mapping, params: Mapping, *,
                   source: str = "", overwrite: bool = False, extra_files: Mapping | None = None):
    """Writes ``path/config.json``, ``path/params`` (orbax) and ``extra_files`` ({name: JSON
    object}) atomically. In a multi-process job every process calls it with the same global
    arrays (orbax writes each process's shards); process 0 writes the rest and renames."""
    def write(tmp):
        with quiet_orbax() as orbax_errors, ocp.StandardCheckpointer() as checkpointer:
            try:
                checkpointer.save(os.path.join(tmp, "params"), dict(params))
                checkpointer.wait_until_finished()
            except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise anything)
                settle(tmp)  # then atomic_dir removes it for good
                raise _write_error(path, orbax_errors.last_error or e) from None
        if jax.process_index() == 0:
            files = {"config.json": {"kind": kind, "config": dict(config), "source": source}}
            for name, obj in {**files, **(extra_files or {})}.items():
                with open(os.path.join(tmp, name), "w") as f:
                    json.dump(obj, f, indent=2)

    if jax.process_count() == 1:
        with atomic_dir(path, overwrite=overwrite) as tmp:
            write(tmp)
        return
    path = os.path.abspath(path)
    tmp = path + ".partial"  # the same on every process
    if jax.process_index() == 0:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite to replace it")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    multihost_utils.sync_global_devices(f"save_converted:start:{path}")
    write(tmp)
    multihost_utils.sync_global_devices(f"save_converted:written:{path}")
    if jax.process_index() == 0:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    multihost_utils.sync_global_devices(f"save_converted:done:{path}")


def _write_error(path: str, error: BaseException) -> OSError:
    """The error of a failed orbax write of ``path``: an OSError naming it with the system's
    reason (tensorstore's ``os_error_code``: a full disk, a file too large, ...), not the
    temporary files it was writing."""
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if code:
        return OSError(int(code.group(1)), os.strerror(int(code.group(1))), path)
    return OSError(errno.EIO, f"writing failed: {one_line(error)}", path)


def settle(folder: str, quiet_s: float = 0.5, timeout_s: float = 10.0):
    """Waits until nothing in ``folder`` has changed for ``quiet_s`` (at most ``timeout_s``):
    when one write fails, orbax returns while tensorstore's other writes still run, and they
    would recreate files in a temporary folder removed at once."""
    def snapshot():
        return sorted((os.path.join(d, n), os.path.getsize(os.path.join(d, n)))
                      for d, _, names in os.walk(folder) for n in names
                      if os.path.exists(os.path.join(d, n)))

    start, last, since = time.monotonic(), None, time.monotonic()
    while time.monotonic() - start < timeout_s:
        now = snapshot()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


def load_converted(path: str) -> tuple[str, dict, dict]:
    """Reads a directory written by ``save_converted``: (kind, config dict, params as numpy)."""
    meta = read_json(os.path.join(path, "config.json"))
    if "kind" not in meta or "config" not in meta:
        raise WeightFileError(f"{path}/config.json is not a camclone_jax converted-model config")
    params_dir = os.path.join(os.path.abspath(path), "params")
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{path}: missing params/ (an interrupted or foreign directory?)")
    try:
        with quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(params_dir)
    except Exception as e:  # orbax / tensorstore raise many types for damaged files
        raise WeightFileError(f"{path}: the converted model's params/ is truncated or corrupt "
                              f"({type(e).__name__}: {one_line(e)}); convert or export it "
                              "again") from None
    return meta["kind"], meta["config"], params


def is_converted_dir(path: str) -> bool:
    """True for a directory written by ``save_converted``."""
    return os.path.isdir(os.path.join(path, "params")) and os.path.isfile(
        os.path.join(path, "config.json"))
