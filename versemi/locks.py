"""One writer per output folder: an advisory lock file that names its holder.

A run folder while it trains and is finished, a ``versemi prepare`` output folder while it is written,
and ``book/executed/`` while notebooks are executed into it are each held by one process at a time.
The lock is ``<folder>.lock`` beside the folder: a POSIX ``fcntl.flock`` on that file (released by the
kernel when the holder exits, is killed or the machine reboots, so a lock can never outlive its
holder), and the file's text names the holder (pid, host, start time, command) so that a second process
can say whom it waits for.

A second process waits (printing one line naming the holder) or, with ``wait=False``, raises a
:class:`LockBusy` (a :class:`~versemi.utils.VersemiError`: exit code 2 in the CLI) naming the holder.
When the lock file still names a holder that is gone (killed, crashed), the lock is taken over with a
warning naming it; the caller then resumes from what the holder left (checkpoints, finished cases).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from versemi.utils import VersemiError

__all__ = ["LockBusy", "StaleLockWarning", "folder_lock", "lock_path", "holder_of"]


class LockBusy(VersemiError):
    """Another process holds the folder (raised with ``wait=False``)."""


class StaleLockWarning(UserWarning):
    """The lock file named a holder that is gone; the lock was taken over."""


def lock_path(folder: str | os.PathLike) -> Path:
    """``<folder>.lock`` beside ``folder`` (outside it, so replacing the folder keeps the lock)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.lock"


def holder_of(folder: str | os.PathLike) -> dict | None:
    """The holder recorded in the lock file of ``folder`` (pid, host, since, argv), or None."""
    try:
        text = lock_path(folder).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(h: dict | None) -> str:
    if not h:
        return "another process"
    return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({' '.join(h.get('argv', [])[:4])})"


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]]}


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder", wait: bool = True,
                poll_seconds: float = 0.5, announce=None) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the duration of the block.

    ``what`` names the folder in messages ("run", "prepared data", "executed notebooks"); ``wait=False``
    raises :class:`LockBusy` instead of waiting; ``announce`` (default: print to stderr) receives the one
    line said while waiting. Re-entrant within a process is not supported (a second ``folder_lock`` of the
    same folder in the same process blocks on itself), so take it once, at the top of the operation.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(folder)
            if not wait:
                raise LockBusy(f"{folder}: the {what} is being written by {_describe(holder)}; "
                               f"wait for it or run again without --no-wait") from None
            say = announce or (lambda line: print(line, file=sys.stderr, flush=True))
            say(f"{folder}: waiting for {_describe(holder)}, which is writing this {what}")
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(poll_seconds)
        previous = holder_of(folder)
        if previous and previous.get("pid") is not None:
            # a holder that ended normally clears the file; a name left behind is a holder that died
            warnings.warn(f"{folder}: taking over the lock of {_describe(previous)}, which is gone; "
                          f"continuing from what it left", StaleLockWarning, stacklevel=3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)   # a clean exit leaves an empty lock file: nobody to take over from
    finally:
        os.close(fd)   # releases the flock
