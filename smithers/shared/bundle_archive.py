"""Receiving a sandbox's result bundle: the tar stream a container hands over,
extracted member by member into the bundle directory, refusing anything that could
leave it or exceed its bounds (:class:`smithers.shared.bundle.BundleBounds`). What is then in
the directory is checked and read by :func:`smithers.shared.bundle.collect_result_bundle`.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from smithers.shared.bundle import LOGS_FILENAME, RESULT_DIRNAME, BundleBounds, check_relpath, mkdir_real
from smithers.shared.errors import BundleRejected

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 64 * 1024


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks that stops past ``limit`` bytes."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self._seen = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._seen += len(chunk)
            if self._seen > self._limit:
                raise BundleRejected(f"result archive is larger than {self._limit} bytes")
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _walk_parents(dest: Path, parts: list[str], rel: str, create: bool) -> Path:
    """Return ``dest/parts...``, each an existing real directory (or created)."""
    current = dest
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            if not create:
                raise BundleRejected(f"{rel}: does not exist in the bundle") from None
            os.mkdir(current, 0o700)
            continue
        if stat.S_ISLNK(mode):
            raise BundleRejected(f"{rel}: path goes through a symbolic link")
        if not stat.S_ISDIR(mode):
            raise BundleRejected(f"{rel}: path goes through a non-directory")
    return current


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, dest: Path, room: int) -> int:
    """Materialize one archive member under ``dest``; return the bytes written."""
    parts = rel.split("/")
    parent = _walk_parents(dest, parts[:-1], rel, create=True)
    target = parent / parts[-1]
    if member.isdir():
        mkdir_real(target, rel)
        return 0
    if os.path.lexists(target):
        raise BundleRejected(f"{rel}: appears twice in the result archive")
    if member.issym():
        # Relative and without '..' is the rule that stays safe whatever other links
        # exist: a target made only of downward steps never resolves above its own
        # directory, so no chain of such links can leave the bundle.
        link = member.linkname
        if not link or link.startswith("/") or ".." in link.split("/") or "\x00" in link:
            raise BundleRejected(f"{rel}: symbolic link points outside the bundle ({link[:200]})")
        os.symlink(link, target)
        return 0
    if member.islnk():
        name = member.linkname.removeprefix(RESULT_DIRNAME + "/")
        if member.linkname == name:
            raise BundleRejected(f"{rel}: hard link points outside the bundle")
        check_relpath(name, "result link target", 4096, BundleRejected)
        source_parts = name.split("/")
        source = _walk_parents(dest, source_parts[:-1], rel, create=False) / source_parts[-1]
        if not os.path.lexists(source) or not stat.S_ISREG(os.lstat(source).st_mode):
            raise BundleRejected(f"{rel}: hard link target is not a file in the bundle")
        os.link(source, target, follow_symlinks=False)
        return 0
    if not member.isreg():
        raise BundleRejected(f"{rel}: not a regular file, directory or link")
    if member.size > room:
        raise BundleRejected(f"{rel}: result bundle exceeds its byte limit")
    source_file = tar.extractfile(member)
    if source_file is None:
        raise BundleRejected(f"{rel}: unreadable archive member")
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source_file.read(_CHUNK):
            written += len(chunk)
            if written > room:
                raise BundleRejected(f"{rel}: result bundle exceeds its byte limit")
            out.write(chunk)
    return written


def extract_result_archive(chunks: Iterable[bytes], dest: Path, bounds: BundleBounds) -> int:
    """Extract a tar stream whose members live under ``result/`` into ``dest``.

    ``dest`` must not exist. Members are written one by one by this function, never by
    ``tarfile.extract``: absolute names, ``..``, symlinks and hard links that could
    leave the bundle, devices, fifos, duplicates, over-long paths, too many entries
    and more than ``bounds.max_bundle_bytes`` of content are refused with
    :class:`BundleRejected` naming the path. Returns the content bytes written.
    """
    os.mkdir(dest, 0o700)
    raw_limit = bounds.max_bundle_bytes + 2048 * (bounds.max_entries + 16)
    total = 0
    entries = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks, raw_limit)), mode="r|") as tar:
            for member in tar:
                entries += 1
                if entries > bounds.max_entries + 1:
                    raise BundleRejected(f"result has more than {bounds.max_entries} entries")
                name = member.name.removeprefix("./").rstrip("/")
                if name == RESULT_DIRNAME:
                    if not member.isdir():
                        raise BundleRejected(f"{name}: is not a directory")
                    continue
                if not name.startswith(RESULT_DIRNAME + "/"):
                    raise BundleRejected(f"{name[:300]}: outside the result directory")
                rel = check_relpath(
                    name.removeprefix(RESULT_DIRNAME + "/"),
                    "result",
                    bounds.max_path_length,
                    BundleRejected,
                )
                if rel == LOGS_FILENAME:
                    raise BundleRejected(f"{rel}: name is reserved for the runtime's logs")
                total += _extract_member(tar, member, rel, dest, bounds.max_bundle_bytes - total)
    except tarfile.TarError as exc:
        raise BundleRejected(f"result archive is not a valid tar: {exc}") from None
    return total
