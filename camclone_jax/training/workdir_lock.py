"""One training job per workdir: WORKDIR/train.lock names the job that holds it.

    with WorkdirLock(workdir):      # raises WorkdirLockedError naming the holder
        ...                          # train; the lock is removed on the way out

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds JSON: host, pid, the
process's start time (from /proc, where there is one), when it was taken and the command line.
A lock left by a job that died without cleaning up (kill -9, a node crash) is *stale* when its
host is this host and its pid no longer runs (or runs a later process: its start time differs);
a stale lock is taken over, with a warning. A lock held from another host cannot be checked from
here, so it is refused like a live one; the message says to delete the file if that job is gone.

Multi-process runs take the lock once, in process 0 (``acquire_for_run``): every process learns
whether it was taken, so all of them stop together when it was not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from camclone_jax.errors import UserError

log = logging.getLogger(__name__)
LOCK_FILE = "train.lock"


class WorkdirLockedError(UserError, RuntimeError):
    """Another job holds the workdir (the message names it and the lock file)."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22 counted after "pid (comm)"


def _alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` runs on this host and is the process that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = _start_time(pid)
    return start is None or now is None or now == start


def describe(holder: dict) -> str:
    """'pid 123 on host h (since 2026-01-01 10:00:00 UTC: python -m camclone_jax.train ...)'."""
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "?"
    command = holder.get("command", "?")
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {when}: {command})"


class WorkdirLock:
    """The lock of one workdir; a context manager (``acquire`` / ``release``)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self._mine: dict | None = None

    def _record(self) -> dict:
        pid = os.getpid()
        return {"host": socket.gethostname(), "pid": pid, "pid_start": _start_time(pid),
                "since": time.time(), "command": " ".join(sys.argv)[:300]}

    def _create(self, record: dict) -> bool:
        """Creates the lock file holding ``record``; False when one exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def holder(self) -> dict | None:
        """The lock file's contents (None when there is none; {} when it is unreadable)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return {}  # being written this instant, or damaged

    def _is_stale(self, holder: dict) -> bool:
        return (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
                and not _alive(holder["pid"], holder.get("pid_start")))

    def _take_over(self, stale: dict) -> bool:
        """Moves the stale lock aside and creates ours; False if another job got there first."""
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside) as f:
                moved = json.load(f)
        except ValueError:
            moved = {}
        if moved != stale:  # another job took it over between our read and our rename
            try:
                os.link(aside, self.path)  # put its lock back (fails if a third one exists)
            except FileExistsError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def acquire(self) -> "WorkdirLock":
        """Takes the lock or raises ``WorkdirLockedError`` naming the job that holds it."""
        record = self._record()
        for _ in range(3):
            if self._create(record):
                self._mine = record
                return self
            holder = self.holder()
            if holder is None:
                continue  # released between our two looks
            if holder and self._is_stale(holder):
                log.warning("taking over the stale lock %s of %s, which no longer runs",
                            self.path, describe(holder))
                if self._take_over(holder) and self._create(record):
                    self._mine = record
                    return self
                continue
            break
        holder = self.holder() or {}
        raise WorkdirLockedError(
            f"workdir {os.path.dirname(self.path)} is in use by another training job, "
            f"{describe(holder)}; wait for it to end or use another --workdir (if no such job "
            f"runs, delete {self.path})")

    def release(self):
        """Removes the lock file if it is still ours."""
        if self._mine is not None and self.holder() == self._mine:
            os.remove(self.path)
        self._mine = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def acquire_for_run(workdir: str) -> WorkdirLock | None:
    """Process 0 takes ``workdir``'s lock; every process raises ``WorkdirLockedError`` if it
    could not. Returns the lock (process 0) or None (the other processes)."""
    lock, error = None, ""
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire()
        except WorkdirLockedError as e:
            error = str(e)
    if jax.process_count() > 1:
        taken = multihost_utils.broadcast_one_to_all(np.array(error == ""))  # process 0's
        if not bool(taken):
            error = error or f"workdir {workdir} is in use by another training job (see process 0)"
    if error:
        raise WorkdirLockedError(error)
    return lock
