"""Stopping a step's body from another thread: the main thread's by a signal, a pool
thread's at its next bytecode; never outside the body."""

from __future__ import annotations

import threading
import time

import pytest

from smithers.workers.interrupt import TIMEOUT, Interruptible, StepInterrupted


def interrupt_after(body: Interruptible, seconds: float, reason: str = TIMEOUT) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), body.interrupt(reason)))
    thread.start()
    return thread


def test_a_sleep_in_the_main_thread_ends_at_once() -> None:
    # given a body sleeping 30 s in the main thread (a prefork pool process)
    body = Interruptible()
    body.timeout_s = 0.2
    helper = interrupt_after(body, 0.2)
    began = time.monotonic()

    # when another thread interrupts it, then the sleep ends with StepInterrupted
    with pytest.raises(StepInterrupted), body:
        time.sleep(30)
    helper.join()
    assert time.monotonic() - began < 5
    assert body.error() == {"code": "timeout", "message": "step ran past its timeout of 0.2s"}


def test_python_code_in_a_pool_thread_is_stopped_at_its_next_bytecode() -> None:
    # given a body spinning in Python in a thread of its own (the threads pool)
    body = Interruptible()
    outcome: list[str] = []

    def step() -> None:
        try:
            with body:
                while True:
                    time.sleep(0.01)
        except StepInterrupted:
            outcome.append("stopped")

    thread = threading.Thread(target=step)
    thread.start()
    time.sleep(0.1)

    # when it is interrupted for a cancel, then it stops, with the cancel's error
    assert body.interrupt("cancelled")
    thread.join(5)
    assert not thread.is_alive() and outcome == ["stopped"]
    assert body.error()["code"] == "cancelled"


def test_nothing_is_raised_outside_the_body_and_a_stop_asked_early_raises_as_it_starts() -> None:
    # given a body that ended: an interrupt now sends nothing (the signal handler stays
    # installed and ignores a late signal)
    body = Interruptible()
    with body:
        pass
    assert not body.interrupt("lost")
    time.sleep(0.05)

    # and a stop asked for before the body begins raises as it begins
    with pytest.raises(StepInterrupted), body:
        pytest.fail("the body must not run")
    assert body.error()["code"] == "lost"
    assert not body.interrupt(TIMEOUT) and body.reason == "lost"  # the first reason wins
