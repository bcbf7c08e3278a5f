"""The command lines' one error path: what a user error is, how it is printed, and the checks
of a command's outputs before its work starts.

Every ``python -m camclone_jax.*`` command ends a user error (a bad flag, a missing or malformed
input file, an output that cannot be written, a checkpoint that does not fit the run) with one
line on stderr, ``error: <the problem, naming the file or flag>``, and exit status 2
(`USER_ERRORS`, `report`, `exit_on_user_error`); any other exception is a bug and keeps its
traceback. `check_output_file` and `check_output_dir` are the checks each command makes of what
it will write before it loads a model or reads data, so a bad ``--out`` costs nothing and the
message names the path as the user gave it (not a temporary file beside it). Users' text and
CSV files (jobs, prompts, dataset and pairing CSVs) are read strictly by `read_text` and
`read_csv`; `raise_on_signals` lets a command stop on SIGINT / SIGTERM with one line and exit
status 128 + the signal.

This module is on the ground floor: it imports nothing of the package, and every layer may
raise `UserError`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import signal
import sys
import tempfile
import threading
from typing import Iterable, Iterator

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A fault of a command's flags, inputs or surroundings (not of the code): the message
    names the problem and the file or flag, and the command line prints it as one line."""


# what a command line reports as one line, exit status 2: the package's own errors, and the
# standard kinds its checks raise for bad values (ValueError), files and folders (OSError:
# missing, unreadable, read-only, full) and optional packages that are not installed
USER_ERRORS = (UserError, ValueError, OSError, ImportError)


def message(error: BaseException) -> str:
    """``error``'s message as one line: a KeyError without its quotes, an OSError as
    'PATH: reason', lines joined with '; '."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.strerror and len(error.args) > 1:
        text = error.strerror if error.filename is None else f"{error.filename}: {error.strerror}"
    else:
        text = str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report(error: BaseException) -> int:
    """Prints ``error: <message>`` to stderr; returns the exit status of a user error (2)."""
    print(f"error: {message(error)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


@contextlib.contextmanager
def exit_on_user_error(errors: tuple = USER_ERRORS) -> Iterator[None]:
    """Turns an exception of ``errors`` raised in the block into `report`'s one line and
    ``SystemExit(2)``; anything else passes through with its traceback."""
    try:
        yield
    except errors as e:
        sys.exit(report(e))


# ------------------------------------------------------------------------------ input files
def read_text(path: str, what: str) -> str:
    """A user's text file (``what``: "jobs file", "--prompts", ...) as UTF-8 text, a leading
    byte-order mark dropped. Refuses a folder, a missing file and bytes that are not UTF-8
    (naming the line)."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder, expected a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}, "
                        "e.g. a latin-1 file): save it as UTF-8, e.g. with `iconv -f latin1 "
                        "-t utf-8`") from None


def read_csv(path: str, what: str, columns: Iterable[str], required: Iterable[str] = ()
             ) -> list[dict]:
    """The rows of a user's CSV file (`read_text`) as {header field: value}, blank lines
    skipped. Refuses a file whose first line names none of ``columns`` (no header line), a
    header without the ``required`` columns, and a row with more or fewer fields than the
    header (naming its line)."""
    columns = list(columns)
    reader = csv.reader(io.StringIO(read_text(path, what), newline=""))
    header = [h.strip() for h in next(reader, [])]
    if not set(header) & set(columns):
        raise UserError(f"{path}:1: the first line must be a header naming the columns (e.g. "
                        f"{','.join(columns[:4])}), got {','.join(header)[:80]!r}")
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path} lacks the column(s) {missing}; expected {list(required)}")
    rows = []
    for fields in reader:
        if not any(v.strip() for v in fields):
            continue
        if len(fields) != len(header):
            raise UserError(f"{path}:{reader.line_num}: {len(fields)} fields, the header has "
                            f"{len(header)} (a comma too many or too few? quote a field that "
                            "holds commas)")
        rows.append(dict(zip(header, fields)))
    return rows


# ------------------------------------------------------------------------------ signals
class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while `raise_on_signals` was active. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` in the work swallows it; a command
    stopped so exits with `exit_status` (128 + the signal's number)."""

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """While active (in the main thread), SIGINT and SIGTERM raise `Interrupted` where the
    main thread is, so context managers and ``finally`` blocks clean up; the previous handlers
    come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------ outputs
def _existing_ancestor(path: str) -> str:
    """The nearest existing path at or above ``path``."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _check_writable_folder(folder: str, flag: str, given: str):
    """Raises `UserError` unless a file can be created in the existing ``folder``."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = f"{folder} is not writable ({e.strerror})"
        raise UserError(f"{flag} {given} cannot be written: {reason}") from None
    os.close(fd)
    os.remove(probe)


def check_output_file(path: str, flag: str) -> None:
    """Raises `UserError` (naming ``flag`` and ``path`` as given) unless a file can be written
    at ``path``: it is not a folder, no file stands where a folder of its path should be, and
    its folder (or the nearest one that exists, where the rest would be created) is writable."""
    if not path:
        raise UserError(f"{flag} is empty")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder, expected a file path")
    folder = _existing_ancestor(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path} cannot be written: {folder} is a file, not a folder")
    _check_writable_folder(folder, flag, path)


def check_output_dir(path: str, flag: str) -> None:
    """Raises `UserError` (naming ``flag`` and ``path`` as given) unless ``path`` is a writable
    folder or can be created as one (nothing else sits at it or above it)."""
    if not path:
        raise UserError(f"{flag} is empty")
    existing = _existing_ancestor(path)
    if existing == os.path.abspath(path) and not os.path.isdir(existing):
        raise UserError(f"{flag} {path} is a file, expected a folder")
    if not os.path.isdir(existing):
        raise UserError(f"{flag} {path} cannot be created: {existing} is a file, not a folder")
    _check_writable_folder(existing, flag, path)
