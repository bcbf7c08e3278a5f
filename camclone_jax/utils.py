"""The ground floor: atomic file writes, file modes, JSON files and param-tree paths.

Every layer may import this module; it imports nothing of the package. Files are written beside
their destination and renamed into place (``atomic_file``, ``write_atomic``, ``atomic_dir``), so
an error or an interrupt never leaves a half-written result, and they get the mode a plain
``open`` / ``mkdir`` would give. Param trees are plain nested dicts; ``flatten_params`` gives
their ``'a/b/c'`` paths (the keys of optimizer masks, sharding rules and weight converters).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Mapping


# ------------------------------------------------------------------------------ param trees
def flatten_params(params: Mapping, sep: str = "/") -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    out = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            for sub, leaf in flatten_params(value, sep).items():
                out[f"{key}{sep}{sub}"] = leaf
        else:
            out[key] = value
    return out


def unflatten_params(flat: Mapping[str, Any], sep: str = "/") -> dict:
    """{'a/b/c': leaf} -> nested dict."""
    out: dict = {}
    for path, leaf in flat.items():
        node = out
        *parents, last = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return out


# ------------------------------------------------------------------------------------ files
def read_json(path: str) -> dict:
    """Reads a JSON file with an error that names it (FileNotFoundError, ValueError)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing {os.path.basename(path)} in {os.path.dirname(path)}") from None
    except ValueError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0o666 minus the umask); temporary files
    made by ``tempfile`` are 0o600 and get this before they are renamed into place."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode a plain ``os.mkdir`` would give (0o777 minus the umask)."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """Yields a temp path beside ``path``; renames it onto ``path`` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str, data: str | bytes):
    """Writes text or bytes to ``path`` atomically (a temp file beside it, then a rename)."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_dir(path: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temp directory beside ``path``; moves it to ``path`` only if the block succeeds."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite to replace it")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                           dir=os.path.dirname(path))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes 0700; give what mkdir would
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
