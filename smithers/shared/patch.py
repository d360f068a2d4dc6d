"""Apply a sandbox step's unified diffs to its workspace, in memory.

The workspace is the step's declared files (``SandboxSpec.files``, a mapping of
relative path to text). A patch is a unified diff as ``diff -ruN a b``, ``git diff``
or ``diff -u`` write it, with one leading path component stripped (``patch -p1``).
Nothing here touches a filesystem, so no patch can read or write outside the
workspace whatever its paths say; paths are still checked (relative, no ``..``) so
that the result can be written to disk safely.

Supported: modified files, new and deleted files (``/dev/null``, or ``diff -N``'s
epoch time on an empty side), ``\\ No newline at end of file``, hunks found at an
offset from their line numbers. Refused with :class:`BundleRejected` naming the patch
and path: binary patches, renames and copies, mode changes of missing files, and any
hunk whose context does not match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from smithers.shared.bundle import check_relpath
from smithers.shared.errors import BundleRejected

__all__ = ["MIN_WORK", "WORK_PER_BYTE", "FilePatch", "Hunk", "apply_patches", "parse_patch"]

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_UNSUPPORTED = ("rename from ", "rename to ", "copy from ", "copy to ", "GIT binary patch", "Binary files ")
_NO_NEWLINE = "\\ No newline at end of file"
WORK_PER_BYTE = 8
"""Line comparisons and copies allowed per byte of patches and workspace."""
MIN_WORK = 100_000


@dataclass(frozen=True)
class Hunk:
    """One hunk: the lines it expects (``old``) and the lines it leaves (``new``)."""

    old_start: int
    old: tuple[str, ...]
    new: tuple[str, ...]


@dataclass(frozen=True)
class FilePatch:
    """The hunks for one file; ``old_path``/``new_path`` is None for ``/dev/null``."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        """The workspace path this patch changes."""
        path = self.new_path or self.old_path
        assert path is not None
        return path


def _path(raw: str, name: str, max_length: int) -> str | None:
    """``a/src/x.py<TAB>date`` -> ``src/x.py``; ``/dev/null`` -> None."""
    value = raw.split("\t", 1)[0].rstrip("\r\n")
    if value.startswith('"'):
        raise BundleRejected(f"{name}: {value[:200]}: quoted file names are not supported")
    if value == "/dev/null":
        return None
    parts = value.split("/", 1)
    if len(parts) != 2:
        raise BundleRejected(f"{name}: {value[:200]}: path has no a/ or b/ prefix to strip (-p1)")
    return check_relpath(parts[1], name, max_length, BundleRejected)


def _epoch(header: str) -> bool:
    """True for a ``---``/``+++`` line whose time is the epoch (diff -N's missing file)."""
    _, _, when = header.partition("\t")
    return when.startswith(("1970-01-01 00:00:00", "Thu Jan  1 00:00:00 1970"))


def _read_hunk(lines: list[str], i: int, name: str, where: str) -> tuple[Hunk, int]:
    match = _HUNK.match(lines[i])
    if match is None:
        raise BundleRejected(f"{name}: {where}: malformed hunk header {lines[i][:80]!r}")
    old_start = int(match.group(1))
    old_count = 1 if match.group(2) is None else int(match.group(2))
    new_count = 1 if match.group(4) is None else int(match.group(4))
    old: list[str] = []
    new: list[str] = []
    i += 1
    last: list[list[str]] = []
    while len(old) < old_count or len(new) < new_count or (i < len(lines) and lines[i].startswith("\\")):
        if i >= len(lines):
            raise BundleRejected(f"{name}: {where}: hunk ends early")
        line = lines[i]
        tag, text = (line[0], line[1:]) if line not in ("\n", "\r\n") else (" ", line)
        if tag == "\\":
            for side in last:  # the previous line has no newline at the end
                side[-1] = side[-1].rstrip("\n")
            last = []
        elif tag == " ":
            old.append(text)
            new.append(text)
            last = [old, new]
        elif tag == "-":
            old.append(text)
            last = [old]
        elif tag == "+":
            new.append(text)
            last = [new]
        else:
            raise BundleRejected(f"{name}: {where}: unexpected line in hunk {line[:80]!r}")
        if len(old) > old_count or len(new) > new_count:
            raise BundleRejected(f"{name}: {where}: hunk has more lines than its header says")
        i += 1
    return Hunk(old_start, tuple(old), tuple(new)), i


def parse_patch(text: str, name: str, max_path_length: int = 255) -> list[FilePatch]:
    """Parse a unified diff; ``name`` (e.g. ``patches/fix.diff``) appears in every error."""
    lines = text.splitlines(keepends=True)
    files: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_UNSUPPORTED):
            raise BundleRejected(f"{name}: line {i + 1}: {line.strip()[:80]!r} is not supported")
        if not line.startswith("--- ") or i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
            i += 1  # headers (diff --git, index, mode lines) and commentary
            continue
        old_path = _path(line[4:], name, max_path_length)
        new_path = _path(lines[i + 1][4:], name, max_path_length)
        if old_path is None and new_path is None:
            raise BundleRejected(f"{name}: line {i + 1}: both sides are /dev/null")
        if old_path is not None and new_path is not None and old_path != new_path:
            raise BundleRejected(f"{name}: {old_path} -> {new_path}: renames are not supported")
        where = str(new_path or old_path)
        header = (line, lines[i + 1])
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith("@@"):
            hunk, i = _read_hunk(lines, i, name, where)
            hunks.append(hunk)
        if not hunks:
            raise BundleRejected(f"{name}: {where}: no hunks")
        # diff -N marks a missing side with the epoch as its time, not /dev/null.
        if _epoch(header[0]) and all(not h.old for h in hunks):
            old_path = None
        if _epoch(header[1]) and all(not h.new for h in hunks) and old_path is not None:
            new_path = None
        files.append(FilePatch(old_path, new_path, tuple(hunks)))
    if not files:
        raise BundleRejected(f"{name}: not a unified diff (no ---/+++ file headers)")
    return files


class _Budget:
    """Line comparisons and copies left; every step of applying spends from it.

    The budget is a fixed multiple of the input's size, so applying costs at most
    linear time whatever a patch's hunks claim (bad line numbers make the offset
    search long, many patches of one file copy it often); past it the patch is
    refused rather than burning the worker's CPU.
    """

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, amount: int, where: str) -> None:
        self.left -= amount
        if self.left < 0:
            raise BundleRejected(f"{where}: too costly to apply (hunks far from their line numbers?)")


def _find(
    lines: list[str], old: tuple[str, ...], expected: int, start: int, budget: _Budget, where: str
) -> int | None:
    """Where ``old`` occurs at or after ``start``, nearest to ``expected`` first.

    Walks outward from ``expected`` (ties go to the lower position), comparing the
    first line before the rest, so a hunk at its stated place costs its own length.
    """
    size = len(old)
    last = len(lines) - size
    if last < start:
        return None
    expected = min(max(expected, start), last)
    first = old[0] if old else None
    below, above = expected, expected + 1
    while below >= start or above <= last:
        for pos in (below, above):
            if not start <= pos <= last:
                continue
            budget.spend(1, where)
            if first is None or lines[pos] == first:
                budget.spend(size, where)
                if tuple(lines[pos : pos + size]) == old:
                    return pos
        below, above = below - 1, above + 1
    return None


def _apply_file(current: str | None, patch: FilePatch, name: str, budget: _Budget) -> str | None:
    where = f"{name}: {patch.path}"
    creating = patch.old_path is None or (
        current is None and all(h.old_start == 0 and not h.old for h in patch.hunks)
    )
    if creating and current is not None:
        raise BundleRejected(f"{where}: creates a file that already exists in the workspace")
    if not creating and current is None:
        raise BundleRejected(f"{where}: file is not in the workspace")
    lines = (current or "").splitlines(keepends=True)
    budget.spend(len(lines), where)
    out: list[str] = []
    cursor = 0
    for number, hunk in enumerate(patch.hunks, 1):
        expected = max(hunk.old_start - 1, 0) if hunk.old else hunk.old_start
        pos = _find(lines, hunk.old, expected, cursor, budget, where)
        if pos is None:
            raise BundleRejected(f"{where}: hunk {number} does not apply")
        out.extend(lines[cursor:pos])
        out.extend(hunk.new)
        cursor = pos + len(hunk.old)
    out.extend(lines[cursor:])
    if patch.new_path is None:
        if out:
            raise BundleRejected(f"{where}: deletes a file but leaves lines in it")
        return None
    return "".join(out)


def apply_patches(
    files: Mapping[str, str], patches: Sequence[tuple[str, str]], max_path_length: int = 255
) -> dict[str, str | None]:
    """Apply ``patches`` (``(name, text)`` in order) to ``files``; return the changes.

    The result maps each changed path to its new text, or None when it was deleted.
    Patches see the changes of the ones before them. Pure: raises
    :class:`BundleRejected` naming the patch and path when anything does not apply,
    or when applying would cost more than ``WORK_PER_BYTE`` line operations per byte
    of input (linear time: hunks at their line numbers spend far less).
    """
    state: dict[str, str | None] = dict(files)
    changed: set[str] = set()
    size = sum(len(text) for _, text in patches) + sum(len(text) for text in files.values())
    budget = _Budget(WORK_PER_BYTE * size + MIN_WORK)
    for name, text in patches:
        for patch in parse_patch(text, name, max_path_length):
            state[patch.path] = _apply_file(state.get(patch.path), patch, name, budget)
            changed.add(patch.path)
    return {path: state[path] for path in sorted(changed) if state[path] != files.get(path)}
