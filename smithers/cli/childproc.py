"""The child processes of ``smithers up``: they die with it, and their logs rotate.

Each child runs in a session of its own (Ctrl-C reaches only ``smithers up``, which
stops the children in order) and, on Linux, asks the kernel for SIGTERM when the
thread that started it ends (``prctl(PR_SET_PDEATHSIG)``): a ``smithers up`` killed
with SIGKILL leaves nothing running. Elsewhere each child also gets the read end of a
pipe the parent holds (its descriptor in an environment variable) that ``smithers`` watches
(:func:`watch_parent`): end of file means the parent is gone.

A child's stdout and stderr go through a pipe to a thread of the parent that appends
them to ``<name>.log`` and rotates it by size: ``<name>.log.1`` is the one before, up
to ``backups`` files are kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from smithers.shared import settings

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_FD = settings.PARENT_FD.name


class RotatingLog:
    """An append-only log file that is rotated when it would grow past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first when the file would grow past the limit."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if self.max_bytes and size and size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        if self.backups < 1:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


def _pump(stream: int, log: RotatingLog) -> None:
    with contextlib.suppress(OSError):
        while chunk := os.read(stream, 65536):
            log.write(chunk)
    os.close(stream)


def _die_with_parent(parent: int) -> None:
    """Run in the child between fork and exec: SIGTERM when the parent goes (Linux)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def spawn(
    argv: Sequence[str], env: Mapping[str, str], log: RotatingLog, user: pwd.struct_passwd | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, tied to this process, logging to ``log``;
    as ``user`` when given (the kernel clears the parent-death signal when the user
    changes: it is asked for after the switch)."""
    parent = os.getpid()
    read_out, write_out = os.pipe()
    watch_read, watch_write = os.pipe()  # the child sees end of file once we are gone
    child_env = {**env, PARENT_FD: str(watch_read)}
    try:
        proc = subprocess.Popen(
            list(argv),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=write_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(watch_read,),
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509 (async-signal-safe enough: prctl, getppid)
        )
    finally:
        os.close(write_out)
        os.close(watch_read)
    _WATCH_FDS[proc.pid] = watch_write  # kept open (inherited by nobody: O_CLOEXEC) until we exit
    threading.Thread(target=_pump, args=(read_out, log), name=f"log-{log.path.name}", daemon=True).start()
    return proc


_WATCH_FDS: dict[int, int] = {}


def forget(proc: subprocess.Popen[bytes]) -> None:
    """Close the watch pipe of a child that has exited."""
    fd = _WATCH_FDS.pop(proc.pid, None)
    if fd is not None:
        os.close(fd)


def watch_parent(env: MutableMapping[str, str]) -> None:
    """In a child of ``smithers up``: exit (SIGTERM to ourselves) when the parent is gone,
    seen as end of file on the pipe it holds. A no-op outside ``smithers up``. The
    variable is taken out of ``env``: the child's own children do not inherit it."""
    raw = env.pop(PARENT_FD, "")
    if not raw.isdigit():
        return
    fd = int(raw)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return  # not ours (a stale variable)

    def wait() -> None:
        # a selector first: in a process gevent patched (the gateway, a gevent worker)
        # this thread is a greenlet, and a bare read would block every other greenlet
        with contextlib.suppress(OSError), selectors.DefaultSelector() as readable:
            readable.register(fd, selectors.EVENT_READ)
            while readable.select() and os.read(fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()
