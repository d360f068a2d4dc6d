"""A coroutine step body on the process's event loop: its result, its exception, its
stop by a cancel of its task (not a raise in a thread), and a step thread that never
waits on a coroutine that ignores its cancel for longer than the grace."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from typing import Any

import pytest

from smithers import Workflow
from smithers.shared.errors import InvalidWorkflow
from smithers.workers import eventloop
from smithers.workers.interrupt import CANCELLED, TIMEOUT, Interruptible, StepInterrupted


def stop_after(body: Interruptible, seconds: float, reason: str = TIMEOUT) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), body.interrupt(reason)))
    thread.start()
    return thread


def test_many_coroutines_share_one_loop_thread_and_return_their_results() -> None:
    # given ten step threads, each running a coroutine that sleeps 0.3 s
    seen: list[tuple[str, int]] = []

    async def step(k: int) -> int:
        seen.append((threading.current_thread().name, k))
        await asyncio.sleep(0.3)
        return k * k

    results: dict[int, int] = {}

    def thread(k: int) -> None:
        results[k] = eventloop.call(step, k, Interruptible())

    began = time.monotonic()
    threads = [threading.Thread(target=thread, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    # then each got its result, all ran in the one loop thread, at once (not 3 s serially)
    assert results == {k: k * k for k in range(10)}
    assert {name for name, _ in seen} == {"smithers-eventloop"}
    assert time.monotonic() - began < 2.5


def test_a_stop_cancels_the_task_and_raises_step_interrupted_in_the_waiting_thread() -> None:
    # given a coroutine that sleeps 30 s and records its cancel and its finally
    body = Interruptible()
    body.timeout_s = 0.2
    happened: list[str] = []

    async def step(_: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            happened.append("cancelled")
            raise
        finally:
            happened.append("finally")

    helper = stop_after(body, 0.2)
    began = time.monotonic()

    # when it is stopped at its timeout
    with pytest.raises(StepInterrupted):
        eventloop.call(step, None, body)
    helper.join()

    # then its task was cancelled at once, its finally ran, with the timeout's error
    assert time.monotonic() - began < 2
    assert happened == ["cancelled", "finally"]
    assert body.error()["code"] == TIMEOUT


def test_a_coroutine_that_returns_after_its_cancel_still_ends_stopped() -> None:
    body = Interruptible()

    async def step(_: Any) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "carried on"
        return "finished"

    helper = stop_after(body, 0.1, CANCELLED)
    with pytest.raises(StepInterrupted):
        eventloop.call(step, None, body)
    helper.join()
    assert body.error()["code"] == CANCELLED


def test_a_coroutine_that_ignores_its_cancel_is_left_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a grace of 0.5 s and a coroutine that swallows every cancel
    monkeypatch.setattr(eventloop, "GRACE_S", 0.5)
    monkeypatch.setattr(eventloop, "_POLL_S", 0.05)
    body = Interruptible()
    release = asyncio.Event()

    async def step(_: Any) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    helper = stop_after(body, 0.1)
    began = time.monotonic()

    # then the step thread gives up on it about the grace after the stop
    with pytest.raises(StepInterrupted):
        eventloop.call(step, None, body)
    helper.join()
    assert 0.5 <= time.monotonic() - began < 2.5
    loop = eventloop._LOOP.get()
    loop.call_soon_threadsafe(release.set)


def test_an_exception_of_the_coroutine_is_raised_with_its_frames() -> None:
    async def failing_step(_: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("the model said no")

    with pytest.raises(ValueError, match="the model said no") as caught:
        eventloop.call(failing_step, None, Interruptible())
    assert "failing_step" in "".join(traceback.format_exception(caught.value))


def test_a_step_cancelling_itself_or_exiting_fails_and_leaves_the_loop_running() -> None:
    async def cancels_itself(_: Any) -> None:
        raise asyncio.CancelledError

    async def exits(_: Any) -> None:
        raise SystemExit(3)

    async def fine(_: Any) -> str:
        return "still here"

    with pytest.raises(eventloop.StepCancelled):
        eventloop.call(cancels_itself, None, Interruptible())
    with pytest.raises(eventloop.StepExited, match="SystemExit"):
        eventloop.call(exits, None, Interruptible())
    assert eventloop.call(fine, None, Interruptible()) == "still here"


def test_a_plain_function_returning_a_coroutine_runs_it_on_the_loop() -> None:
    # given a decorator's wrapper: a plain function returning the async step's coroutine
    async def step(x: int) -> str:
        return f"{threading.current_thread().name}:{x}"

    def wrapper(x: int) -> Any:
        return step(x)

    assert not eventloop.is_async(wrapper) and eventloop.is_async(step)
    assert eventloop.call(wrapper, 7, Interruptible()) == "smithers-eventloop:7"
    assert eventloop.call(lambda x: x + 1, 1, Interruptible()) == 2


def test_a_stop_asked_before_the_coroutine_starts_never_runs_it() -> None:
    body = Interruptible()
    body.interrupt(CANCELLED)
    ran: list[int] = []

    async def step(_: Any) -> None:
        ran.append(1)

    with pytest.raises(StepInterrupted):
        eventloop.call(step, None, body)
    assert ran == []


def test_heartbeat_from_a_coroutine_does_not_wait_and_from_a_thread_does() -> None:
    calls: list[str] = []
    beat = eventloop.heartbeat(lambda: calls.append("beat") is None, lambda: calls.append("soon") is None)

    async def step(_: Any) -> bool:
        return beat()

    assert beat() is True
    assert eventloop.call(step, None, Interruptible()) is True
    assert calls == ["beat", "soon"]


def test_an_async_task_registers_and_an_async_choose_or_until_is_refused() -> None:
    wf = Workflow("w")

    @wf.task()
    async def fetch(ctx: Any) -> int:
        return 1

    assert eventloop.is_async(wf.nodes["fetch"].fn)

    async def choose(ctx: Any) -> str:
        return "a"

    async def until(ctx: Any) -> bool:
        return True

    with pytest.raises(InvalidWorkflow, match="branch 'pick': choose must be a plain function"):
        wf.branch("pick", choose=choose, paths={"a": [fetch]})
    with pytest.raises(InvalidWorkflow, match="loop 'again': until must be a plain function"):
        wf.loop("again", body=[fetch], until=until, max_iterations=2)
