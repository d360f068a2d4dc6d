"""SQLite: writer processes queue on the lock file beside the database (WriteLock).

Real processes, the real file lock: a writer in another process blocks on the file
(seen as a waiter in /proc/locks) until the transaction holding it ends, a forked
child gets a lock of its own, a process killed holding it lets it go, a writer that
does not know the file is still kept out by SQLite's lock, threads of one process
poll instead of queueing on the file behind each other, and the gateway never blocks
its process on the file.
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smithers.gateway.store import GatewayStore
from smithers.shared.errors import StoreUnavailable
from smithers.shared.store import Store
from smithers.shared.store import sqlite as sqlite_backend

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")

CHILD = """
import sys, time
from smithers.shared.store import Store
store = Store(sys.argv[1])
print("ready", flush=True)
with store.write() as tx:
    print(time.time(), flush=True)  # in its transaction from here
    time.sleep(float(sys.argv[2]))
    ending = time.time()
print(ending, flush=True)  # its transaction ended after this time
"""


def lock_path(store: Store) -> str:
    return os.path.abspath(str(store.engine.url.database)) + "-lock"


def waiters(path: str) -> list[int]:
    """Pids blocked on the file lock of ``path`` right now (/proc/locks)."""
    inode = os.stat(path).st_ino
    pids = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
            pids.append(int(fields[fields.index("WRITE") + 1]))
    return pids


def wait_for_waiter(path: str, pid: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while pid not in waiters(path):
        assert time.time() < deadline, f"process {pid} never waited on {path}"
        time.sleep(0.02)


def is_free(path: str) -> bool:
    """Whether nobody holds the file lock (checked on a descriptor of our own)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing it lets go of a lock it took
    return True


def child(url: str, hold_s: float = 0.0) -> subprocess.Popen[str]:
    """A process that writes once, holding its transaction ``hold_s`` seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(hold_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@contextmanager
def migrated(url: str, pooled: bool = False) -> Iterator[Store]:
    store = Store(url)
    store.pooled_writes = pooled
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.mark.parametrize("pooled", [False, True], ids=["own-connection", "pooled"])
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_writer_in_another_process_waits_on_the_lock_file_until_the_transaction_ends(
    sqlite_url: str, pooled: bool, end: str
) -> None:
    with migrated(sqlite_url, pooled) as store:
        path = lock_path(store)
        proc = None
        try:
            with store.write() as tx:
                tx.conn.exec_driver_sql("INSERT INTO counters (name, value) VALUES ('lock-test', 1)")
                assert not is_free(path)
                proc = child(sqlite_url)
                wait_for_waiter(path, proc.pid)  # blocked on the file, not polling SQLite
                ended = time.time()
                if end == "rollback":
                    raise RuntimeError("the block failed")
        except RuntimeError:
            assert end == "rollback"
        assert proc is not None
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert float(out.split()[0]) >= ended  # it got in only after our transaction ended
        assert is_free(path)
        with store.read() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM counters WHERE name = 'lock-test'").scalar()
        assert rows == (1 if end == "commit" else 0)


def _write_after_fork(store: Store, go: Any, out: Any) -> None:
    go.recv()
    with store.write():
        out.send(time.time())


def test_a_forked_child_waits_for_its_parents_lock(sqlite_url: str) -> None:
    """A child forked after the parent opened the lock file does not write on the
    parent's descriptor, on which it would share the parent's lock and skip the queue.
    (It is forked between transactions, as Celery's pool is: a SQLite connection
    must not cross a fork inside a transaction.)"""
    with migrated(sqlite_url) as store:
        path = lock_path(store)
        with store.write():
            pass  # the process has its descriptor of the lock file open now
        ctx = multiprocessing.get_context("fork")
        go_recv, go_send = ctx.Pipe(duplex=False)
        out_recv, out_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_write_after_fork, args=(store, go_recv, out_send))
        proc.start()
        try:
            assert proc.pid is not None
            with store.write():
                go_send.send(True)
                wait_for_waiter(path, proc.pid)
                ended = time.time()
            assert out_recv.poll(30)
            assert out_recv.recv() >= ended
            proc.join(30)
            assert proc.exitcode == 0
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
        with store.write():  # the parent's lock still works after the child closed its copy
            assert not is_free(path)
        assert is_free(path)


def test_a_process_killed_while_holding_the_lock_lets_it_go(sqlite_url: str) -> None:
    with migrated(sqlite_url) as store:
        path = lock_path(store)
        proc = child(sqlite_url, 60)
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # inside its transaction now
            assert not is_free(path)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        deadline = time.time() + 20  # a lock left behind fails here instead of hanging the write
        while not is_free(path):
            assert time.time() < deadline, "the killed process's file lock was not let go"
            time.sleep(0.01)
        with store.write() as tx:  # neither the file lock nor SQLite's is left behind
            tx.conn.exec_driver_sql("INSERT INTO counters (name, value) VALUES ('after-kill', 1)")
        assert is_free(path)


def test_a_writer_that_does_not_know_the_lock_file_is_still_kept_out(sqlite_url: str) -> None:
    with migrated(sqlite_url) as store:
        path = lock_path(store)
        raw = sqlite3.connect(str(store.engine.url.database), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO counters (name, value) VALUES ('foreign', 1)")
        began: list[float] = []

        def write() -> None:
            with store.write() as tx:
                began.append(time.time())
                tx.conn.exec_driver_sql("UPDATE counters SET value = value + 1 WHERE name = 'foreign'")

        thread = threading.Thread(target=write)
        thread.start()
        deadline = time.time() + 20
        while is_free(path):  # it took the file lock and now polls SQLite's
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        assert began == []
        ended = time.time()
        raw.execute("COMMIT")
        raw.close()
        thread.join(30)
        assert began and began[0] >= ended
        with store.read() as conn:
            assert conn.exec_driver_sql("SELECT value FROM counters WHERE name = 'foreign'").scalar() == 2
        assert is_free(path)


def test_threads_of_one_process_poll_instead_of_queueing_on_the_file(sqlite_url: str) -> None:
    with migrated(sqlite_url) as store:
        path = lock_path(store)
        began: list[float] = []
        tries: list[bool] = []

        def write() -> None:
            with store.write():
                began.append(time.time())

        with store.write():
            held = store.write_connection().connection.dbapi_connection.held  # type: ignore[union-attr]
            assert held is not None
            sibling = threading.Thread(target=lambda: tries.append(held[0].try_take()))
            sibling.start()
            sibling.join(10)
            assert tries == [False]  # at once, without waiting for this thread's transaction
            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(0.3)
            assert began == []  # it waits ...
            assert os.getpid() not in waiters(path)  # ... polling SQLite's lock, not on the file
            ended = time.time()
        thread.join(30)
        assert began and began[0] >= ended
        assert is_free(path)


def test_a_write_whose_begin_fails_lets_the_lock_go(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with migrated(sqlite_url) as store:
        path = lock_path(store)

        def locked(*_: Any, **__: Any) -> None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(sqlite_backend, "begin_immediate", locked)
        with pytest.raises(StoreUnavailable, match="locked"), store.write():
            pass
        assert is_free(path)
        monkeypatch.undo()
        with store.write():
            assert not is_free(path)
        assert is_free(path)


def test_the_gateway_polls_instead_of_blocking_its_process_on_the_file(sqlite_url: str) -> None:
    """Its greenlets share one process: a blocking flock() would stall every request."""
    with migrated(sqlite_url) as store:
        path = lock_path(store)
    gateway = GatewayStore(sqlite_url)
    proc = child(sqlite_url, 1.0)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the child is inside its transaction for a second
        began: list[float] = []

        def write() -> None:
            with gateway.write():
                began.append(time.time())

        thread = threading.Thread(target=write)
        thread.start()
        while thread.is_alive():
            assert os.getpid() not in waiters(path)
            time.sleep(0.01)
        thread.join()
        child_ending = float(proc.stdout.readline())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gateway.close()
    assert began and began[0] >= child_ending
    assert is_free(path)


def test_a_store_that_is_gone_leaves_no_descriptor_of_the_lock_file_open(sqlite_url: str) -> None:
    def open_lock_files() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd).endswith("-lock"))

    gc.collect()  # earlier tests' stores
    before = open_lock_files()
    with migrated(sqlite_url) as store:
        with store.write():
            pass
        assert open_lock_files() == before + 1
    del store
    gc.collect()
    assert open_lock_files() == before
