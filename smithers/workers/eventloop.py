"""Running ``async def`` steps: one asyncio event loop per worker process, in a thread of its own.

A step's thread (a pool thread, or a prefork child's main thread) hands its coroutine
to the loop and waits for it; the coroutines of every step the process runs share the
loop, so a worker on the threads pool (``smithers worker --pool threads --concurrency
50``) has fifty of them waiting on their model and tool APIs at once, for fifty idle
threads and one loop. The step's thread keeps its heartbeat, fencing and commit as a
sync step's (:mod:`smithers.workers.step`); a stop (timeout, cancel, given up) cancels
the coroutine's task (:meth:`Interruptible.cancel_with`): no signal, no raise in a thread.

Under gevent (``--pool gevent``) an async step fails at once with an error that says
so: a loop shared by greenlets hung in tests now and then (its thread is a greenlet;
an ``epoll`` selector taken before the patch blocks the process), and no fix was
verified; the threads pool gives the same concurrency for async steps.

A coroutine that blocks (``time.sleep``, a blocking HTTP client) stalls every async
step of its process: blocking work belongs in ``await asyncio.to_thread(...)``. One
that ignores its cancel is waited for :data:`GRACE_S`, then left to the loop and its
attempt failed with the stop's error (a late result has no claim to commit under).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from smithers.shared.errors import SmithersError
from smithers.shared.patching import gevent_patched
from smithers.shared.store.state import HARD_LIMIT_GRACE_S
from smithers.workers.interrupt import Interruptible, StepInterrupted

log = logging.getLogger("smithers.worker")

GRACE_S = HARD_LIMIT_GRACE_S  # how long a cancelled coroutine may take to end
_POLL_S = 0.5  # how often a waiting step thread looks whether its grace is over

T = TypeVar("T")


class StepCancelled(Exception):
    """The step's own code cancelled its task (no stop was asked for): the attempt fails."""


class StepExited(Exception):
    """The step's coroutine raised ``SystemExit`` or ``KeyboardInterrupt``: the attempt
    fails, and the loop the process's other steps share carries on."""


class _Loop:
    """The process's event loop, started in a daemon thread on first use (and again
    after a fork: a prefork child does not inherit its parent's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or self._pid != os.getpid() or not alive:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="smithers-eventloop", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def running_here(self) -> bool:
        """True in the loop's own thread (a coroutine is running)."""
        return self._thread is threading.current_thread() and self._pid == os.getpid()


_LOOP = _Loop()


def is_async(fn: Callable[..., Any] | None) -> bool:
    """True if calling ``fn`` makes a coroutine (``async def``, or a partial of one)."""
    return fn is not None and inspect.iscoroutinefunction(fn)


def on_loop() -> bool:
    """True if called from a step's coroutine (the process's event loop thread)."""
    return _LOOP.running_here()


def heartbeat(beat: Callable[[], bool], soon: Callable[[], bool]) -> Callable[[], bool]:
    """A step's ``ctx.heartbeat``: ``beat`` (a store write, waited for) in a thread,
    ``soon`` (handed to the beater thread) from a coroutine, whose loop must not wait."""
    return lambda: soon() if on_loop() else beat()


def call(fn: Callable[[Any], Any], ctx: Any, body: Interruptible) -> Any:
    """``fn(ctx)`` as a step body stopped by ``body``: a plain function in this thread
    (inside ``with body``); a coroutine (from an ``async def``, or returned by a plain
    function: a decorator's wrapper) on the process's event loop (:func:`run`)."""
    if is_async(fn):
        return run(fn(ctx), body)  # making the coroutine runs none of its code
    with body:
        result = fn(ctx)
    return run(result, body) if inspect.isawaitable(result) else result


def run(awaitable: Awaitable[T], body: Interruptible) -> T:
    """Run ``awaitable`` as a task of the process's loop and wait for its result here.

    A stop asked of ``body`` cancels the task; once the task ended (or :data:`GRACE_S`
    after the stop, if it ignores the cancel) :class:`StepInterrupted` is raised, as a
    sync step's body raises it. An exception of the coroutine is raised as it is, its
    traceback through the coroutine's frames. The task runs in a copy of this thread's
    context (tracing spans started in the coroutine are the step span's children)."""
    if gevent_patched():
        _close(awaitable)
        raise SmithersError(
            "async def steps run on the threads or prefork pool, not gevent"
            " (start this worker with --pool threads)"
        )
    loop = _LOOP.get()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    task = _Task()
    context = contextvars.copy_context()

    def start() -> None:
        task.task = loop.create_task(_awaited(awaitable), context=context)
        task.task.add_done_callback(lambda t: _settle(t, done))

    def stop() -> None:  # from the beater thread
        loop.call_soon_threadsafe(task.cancel)

    try:
        body.cancel_with(stop)
    except StepInterrupted:
        _close(awaitable)
        raise
    try:
        loop.call_soon_threadsafe(start)  # before any cancel: the loop runs callbacks in order
        return _wait(done, body, task)
    finally:
        body.cancel_with(None)


async def _awaited(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except (KeyboardInterrupt, SystemExit) as exc:  # out of a task, these would end the loop's thread
        raise StepExited(f"the step raised {type(exc).__name__}") from exc


class _Task:
    """The step's task, and whether a stop reached it before it ended (loop thread only)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.stopped = False

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.stopped = True
            self.task.cancel()


def _settle(task: asyncio.Task[T], done: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        done.set_exception(asyncio.CancelledError())
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


def _wait(done: concurrent.futures.Future[T], body: Interruptible, task: _Task) -> T:
    given_up_at: float | None = None
    while not done.done():
        concurrent.futures.wait([done], timeout=_POLL_S)
        if done.done() or body.reason is None:
            continue
        now = time.monotonic()
        if given_up_at is None:
            given_up_at = now + GRACE_S
        elif now >= given_up_at:
            log.warning("a stopped step's coroutine ignored its cancel for %.0fs: left running", GRACE_S)
            raise StepInterrupted(body.reason)
    if task.stopped and body.reason is not None:
        # stopped: whatever the coroutine did with its cancel (ended, returned, raised
        # something else), the attempt ends with the stop's error, as a sync step's does
        raise StepInterrupted(body.reason)
    try:
        return done.result()
    except asyncio.CancelledError:
        raise StepCancelled("the step's task was cancelled by the step itself") from None


def _close(awaitable: Awaitable[Any]) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never awaited: no "coroutine was never awaited" warning
