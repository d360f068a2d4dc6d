"""Stopping a step's body while it runs: at its deadline, on cancel, once its attempt was given up.

The step runs in the thread that called it; the process's heartbeat thread decides to
stop it (:mod:`smithers.workers.step`) and calls :meth:`Interruptible.interrupt`, which
raises :class:`StepInterrupted` in the step's thread:

- in the main thread (a prefork pool child, the solo pool) by a signal sent to that
  thread (``signal.pthread_kill`` of ``SIGUSR2``), whose handler raises, as Celery's
  soft time limit does with ``SIGUSR1``: a ``time.sleep``, a blocking socket read or
  a ``select`` returns at once, since the signal interrupts the system call;
- in another thread (the threads pool) with ``PyThreadState_SetAsyncExc`` of the C
  API, which raises when that thread next runs Python bytecode: a call blocked in C
  (a ``time.sleep``) ends first.

An ``async def`` step's coroutine runs on the process's event loop
(:mod:`smithers.workers.eventloop`): its stop cancels its asyncio task instead
(:meth:`Interruptible.cancel_with`), and no thread is raised in.

A step past its timeout that never returns to Python bytecode, or catches
:class:`StepInterrupted` and carries on, is ended by Celery's hard time limit at its
deadline plus :data:`smithers.shared.store.state.HARD_LIMIT_GRACE_S` (prefork: the pool
kills the child and starts another). A greenlet of the gevent pool is not interrupted;
its late result is refused like any other.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

SIGNAL = signal.SIGUSR2  # SIGUSR1 is billiard's soft time limit in a pool child

TIMEOUT = "timeout"
CANCELLED = "cancelled"
LOST = "lost"

_MESSAGES = {
    CANCELLED: "the run was cancelled while the step ran; the step was stopped",
    LOST: "the attempt was given up while the step ran (its lease expired); the step was stopped",
}


class StepInterrupted(BaseException):
    """Raised inside a step's body to stop it. A ``BaseException``, like
    ``KeyboardInterrupt``, so the step's own ``except Exception`` does not swallow it;
    ``finally`` blocks and context managers run as usual."""


class Interruptible:
    """The thread that runs one step's body, and why (if at all) it is to be stopped.

    :meth:`interrupt` may be called from any thread, any number of times: it raises
    in the step's thread at most once, and only while the body runs (inside ``with``).
    A stop asked for before the body starts raises as it starts.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.timeout_s: float | None = None  # for the timeout's message
        self._lock = threading.Lock()
        self._thread = 0
        self._main = False
        self._active = False
        self._sent = False  # a StepInterrupted is on its way to the thread
        self._cancel: Callable[[], None] | None = None  # a coroutine's stop (cancel_with)

    def error(self) -> dict[str, str]:
        """The attempt's error for the stop that happened (``reason`` is set)."""
        reason = self.reason or LOST
        if reason == TIMEOUT:
            return {"code": TIMEOUT, "message": f"step ran past its timeout of {self.timeout_s}s"}
        return {"code": reason, "message": _MESSAGES.get(reason, reason)}

    def interrupt(self, reason: str) -> bool:
        """Stop the body for ``reason`` (the first reason wins); True if a raise was sent now."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            if self._sent:
                return False
            if self._cancel is not None:
                self._sent = True
                self._cancel()
                return True
            if not self._active:
                return False
            self._sent = True
            if self._main:
                signal.pthread_kill(self._thread, SIGNAL)
            else:
                _async_raise(self._thread, StepInterrupted)
            return True

    def cancel_with(self, cancel: Callable[[], None] | None) -> None:
        """From now on a stop calls ``cancel`` (it cancels a coroutine's task; it must
        not block) instead of raising in a thread; None: no more. Raises
        :class:`StepInterrupted` (and attaches nothing) if a stop was asked for already."""
        with self._lock:
            if cancel is not None and self.reason is not None:
                self._sent = True
                raise StepInterrupted(self.reason)
            self._cancel = cancel

    def __enter__(self) -> Interruptible:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(SIGNAL) is not _raise_in_main:
            # Installed once and left: a restored SIG_DFL would kill the process if a
            # signal sent just before the body ended were delivered after it.
            signal.signal(SIGNAL, _raise_in_main)
        with self._lock:
            if self.reason is not None:  # stopped before it began
                self._sent = True
                raise StepInterrupted(self.reason)
            self._thread, self._main = threading.get_ident(), main
            self._active = True
            if main:
                _MAIN.body = self
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._active = False
            if self._main and _MAIN.body is self:
                _MAIN.body = None
            if self._sent and not self._main and kind is not StepInterrupted:
                _async_raise(self._thread, None)  # not raised yet: withdrawn (NULL clears it)


class _Running:
    body: Interruptible | None = None  # the body running in the main thread, if any


_MAIN = _Running()


def _raise_in_main(signum: int, frame: FrameType | None) -> None:
    body = _MAIN.body
    if body is not None and body.reason is not None:
        raise StepInterrupted(body.reason)
    # else: the body ended before the signal arrived; nothing to stop


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """``PyThreadState_SetAsyncExc``: raise ``exc`` in the thread at its next bytecode
    (None withdraws one not raised yet)."""
    arg = ctypes.py_object(exc) if exc is not None else ctypes.c_void_p(0)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), arg)
