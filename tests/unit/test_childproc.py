"""A child of ``smithers up`` watching its parent's pipe, in a process gevent patched
(the gateway, a gevent worker): the watch must not stop the process's other greenlets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)  # a watch that blocks the hub hangs the readline
ROOT = Path(__file__).resolve().parents[2]
CHILD = """
from gevent import monkey; monkey.patch_all()
import os, time
from smithers.cli.childproc import watch_parent
watch_parent(os.environ)
while True:
    time.sleep(0.02)  # another greenlet: it runs only while the watch waits cooperatively
    print("tick", flush=True)
"""


def test_a_gevent_child_keeps_running_while_it_watches_and_ends_when_the_parent_goes() -> None:
    # given a gevent-patched child that watches the read end of a pipe we hold
    read, write = os.pipe()
    env = {**os.environ, "SMITHERS_PARENT_FD": str(read), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], env=env, pass_fds=(read,), stdout=subprocess.PIPE, text=True
    )
    os.close(read)
    try:
        # then its other greenlet keeps running while the watch waits
        assert child.stdout is not None
        assert [child.stdout.readline() for _ in range(5)] == ["tick\n"] * 5

        # when the parent goes (its end of the pipe closes)
        os.close(write)

        # then the child ends itself with SIGTERM
        assert child.wait(timeout=20) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
