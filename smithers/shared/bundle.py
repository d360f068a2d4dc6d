"""The bundles that cross the sandbox boundary, and their bounds.

The worker writes a request bundle (:func:`write_request_bundle`), a runtime runs the
container and copies its ``/work/result`` out with
:func:`smithers.shared.bundle_archive.extract_result_archive`, and
:func:`collect_result_bundle` turns that directory into a :class:`ResultManifest`.

Everything that comes back from a container is hostile until checked: sizes and
counts are bounded by :class:`BundleBounds`, paths are checked against traversal, and
no file is ever opened through a symbolic link. Nothing here imports Docker.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from smithers.shared import jsonsafe, settings
from smithers.shared.errors import BundleRejected, InvalidInput, SmithersError

__all__ = [
    "LOGS_FILENAME",
    "RESULT_DIRNAME",
    "BundleBounds",
    "BundleFile",
    "ResultManifest",
    "ResultStatus",
    "check_relpath",
    "check_storable",
    "check_unique",
    "collect_result_bundle",
    "mkdir_real",
    "read_bundle_file",
    "write_request_bundle",
    "write_tree",
]

RESULT_DIRNAME = "result"
"""The directory a step writes its result bundle to (``/work/result``)."""

LOGS_FILENAME = "logs.txt"
"""Written by the runtime into the result directory; a step may not produce it."""

_ID_RE = re.compile(r"[a-z0-9_-]{1,64}")
_CHUNK = 64 * 1024


class ResultStatus(StrEnum):
    """What a step says about itself in its manifest."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


def check_relpath(path: object, what: str, max_length: int, error: type[SmithersError]) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise ``error``.

    Safe means: a non-empty string of printable characters, not absolute, no
    backslash, no empty, ``.`` or ``..`` component, at most ``max_length`` UTF-8 bytes.
    """
    if not isinstance(path, str) or not path:
        raise error(f"{what}: path must be a non-empty string")
    shown = path.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:300]
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise error(f"{what}: {shown}: path is not valid UTF-8") from None
    if size > max_length:
        raise error(f"{what}: {shown}: path longer than {max_length} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path) or "\\" in path:
        raise error(f"{what}: {shown}: path has control characters or backslashes")
    if path.startswith("/"):
        raise error(f"{what}: {shown}: path is absolute")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise error(f"{what}: {shown}: path has an empty, '.' or '..' component")
    return path


def check_unique(paths: Iterable[str], what: str, error: type[SmithersError]) -> None:
    """Refuse names that collide on a case-insensitive or normalizing filesystem.

    Also refuses a file that is another file's parent directory (``a`` and ``a/b``).
    """
    files: dict[str, str] = {}
    parents: set[str] = set()
    for path in paths:
        key = unicodedata.normalize("NFKC", path).casefold()
        if key in files or key in parents:
            raise error(f"{what}: {path}: name collides with another entry")
        files[key] = path
        parts = key.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in files:
                raise error(f"{what}: {path}: name collides with file {files[prefix]}")
            parents.add(prefix)


@dataclass(frozen=True)
class BundleBounds:
    """Limits on what a result bundle may contain (each from ``SMITHERS_SANDBOX_MAX_*``).

    ``max_manifest_bytes`` (64 KiB): size of ``manifest.json``.
    ``max_bundle_bytes`` (16 MiB): total bytes of regular files in the bundle.
    ``max_patches`` (64) and ``max_artifacts`` (256): entries in the manifest.
    ``max_path_length`` (255): UTF-8 bytes of a bundle-relative path.
    ``max_output_depth`` (16): nesting of ``outputs`` (the object itself is depth 1).
    ``max_entries`` (4096): files, directories and links in the bundle.
    ``max_inline_bytes`` (1 MiB): patch text and patched workspace files copied into
    the step's output and its sandbox record.
    """

    max_manifest_bytes: int = settings.SANDBOX_MAX_MANIFEST_BYTES.default
    max_bundle_bytes: int = settings.SANDBOX_MAX_BUNDLE_BYTES.default
    max_patches: int = settings.SANDBOX_MAX_PATCHES.default
    max_artifacts: int = settings.SANDBOX_MAX_ARTIFACTS.default
    max_path_length: int = settings.SANDBOX_MAX_PATH_LENGTH.default
    max_output_depth: int = settings.SANDBOX_MAX_OUTPUT_DEPTH.default
    max_entries: int = settings.SANDBOX_MAX_ENTRIES.default
    max_inline_bytes: int = settings.SANDBOX_MAX_INLINE_BYTES.default

    def __post_init__(self) -> None:
        """Every bound must be a positive integer."""
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"bundle bound {name} must be a positive integer")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BundleBounds:
        """Build bounds from ``SMITHERS_SANDBOX_MAX_<FIELD>`` (e.g. ``..._MAX_PATCHES``)."""
        return cls(
            max_manifest_bytes=settings.SANDBOX_MAX_MANIFEST_BYTES.read(environ),
            max_bundle_bytes=settings.SANDBOX_MAX_BUNDLE_BYTES.read(environ),
            max_patches=settings.SANDBOX_MAX_PATCHES.read(environ),
            max_artifacts=settings.SANDBOX_MAX_ARTIFACTS.read(environ),
            max_path_length=settings.SANDBOX_MAX_PATH_LENGTH.read(environ),
            max_output_depth=settings.SANDBOX_MAX_OUTPUT_DEPTH.read(environ),
            max_entries=settings.SANDBOX_MAX_ENTRIES.read(environ),
            max_inline_bytes=settings.SANDBOX_MAX_INLINE_BYTES.read(environ),
        )


@dataclass(frozen=True)
class BundleFile:
    """A patch or artifact: ``path`` is relative to ``patches/`` or ``artifacts/``."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ResultManifest:
    """A checked result bundle: what the step reported and the files it produced."""

    status: ResultStatus
    outputs: Mapping[str, object]
    patches: tuple[BundleFile, ...]
    artifacts: tuple[BundleFile, ...]
    total_bytes: int


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidInput(f"{what} must match [a-z0-9_-]{{1,64}}")


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never existing, never through a symlink) and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def mkdir_real(path: Path, shown: str) -> None:
    """Make one directory level, accepting an existing directory but no symlink or file."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise BundleRejected(f"{shown}: exists and is not a directory") from None


def write_request_bundle(
    root: Path,
    run_id: str,
    sandbox_id: str,
    step_input: Mapping[str, object],
    upstream: Mapping[str, object],
    files: Mapping[str, str],
) -> Path:
    """Write ``<root>/<run_id>/<sandbox_id>/request/`` and return the sandbox directory.

    The request holds ``input.json`` (``{"input": ..., "upstream": ...}``) and each
    declared file under ``files/``. A request left by an earlier attempt is replaced.
    Raises :class:`InvalidInput` for bad ids or non-JSON input and
    :class:`BundleRejected` for an unsafe file path.
    """
    _check_id(run_id, "run id")
    _check_id(sandbox_id, "sandbox id")
    for path in files:
        check_relpath(path, "request file", 255, BundleRejected)
    check_unique(files, "request file", BundleRejected)
    try:
        payload = json.dumps(
            {"input": step_input, "upstream": upstream}, sort_keys=True, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"sandbox input is not JSON: {exc}") from None
    root.mkdir(parents=True, exist_ok=True)
    sandbox_dir = root / run_id / sandbox_id
    mkdir_real(root / run_id, run_id)
    mkdir_real(sandbox_dir, f"{run_id}/{sandbox_id}")
    request = sandbox_dir / "request"
    write_tree(request, {})
    _write_new(request / "input.json", payload)
    write_tree(request / "files", files)
    return sandbox_dir


def write_tree(dest: Path, files: Mapping[str, str]) -> None:
    """Replace the directory ``dest`` with ``files`` (relative path -> UTF-8 text).

    Paths are checked as for a request (relative, no ``..``, no colliding names); a
    previous ``dest`` is removed first, without following links.
    """
    for path in files:
        check_relpath(path, "file", 255, BundleRejected)
    check_unique(files, "file", BundleRejected)
    if os.path.lexists(dest):
        shutil.rmtree(dest)  # rmtree refuses a symlinked root and never follows links
    os.mkdir(dest, 0o700)
    for relpath, content in sorted(files.items()):
        target = dest
        for part in relpath.split("/")[:-1]:
            target = target / part
            mkdir_real(target, relpath)
        _write_new(target / relpath.rsplit("/", 1)[-1], content.encode("utf-8"))


def _open_in_bundle(root: Path, relpath: str) -> tuple[int, os.stat_result]:
    """Open ``root/relpath`` read-only without following any symlink or leaving ``root``.

    Each directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor;
    the file is ``lstat``-ed before it is opened, so a device or fifo is never opened.
    """
    parts = relpath.split("/")
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, dir_flags, dir_fd=fd)
            except OSError as exc:
                raise BundleRejected(f"{relpath}: {_why(exc, part, fd)}") from None
            os.close(fd)
            fd = next_fd
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            raise BundleRejected(f"{relpath}: {_why(exc, parts[-1], fd)}") from None
        if stat.S_ISLNK(info.st_mode):
            raise BundleRejected(f"{relpath}: is a symbolic link")
        if not stat.S_ISREG(info.st_mode):
            raise BundleRejected(f"{relpath}: is not a regular file")
        if info.st_nlink > 1:
            raise BundleRejected(f"{relpath}: is a hard link")
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    opened = os.fstat(file_fd)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
        os.close(file_fd)
        raise BundleRejected(f"{relpath}: changed while it was checked")
    return file_fd, opened


def read_bundle_file(root: Path, relpath: str, limit: int) -> bytes:
    """Read ``root/relpath`` (checked as in :func:`collect_result_bundle`), at most ``limit`` bytes."""
    fd, info = _open_in_bundle(root, relpath)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit or info.st_size > limit:
        raise BundleRejected(f"{relpath}: larger than {limit} bytes")
    return data


def _why(exc: OSError, name: str, dir_fd: int) -> str:
    """Say why ``name`` (in the directory ``dir_fd``) could not be opened."""
    if exc.errno == errno.ENOENT:
        return "does not exist in the bundle"
    # Linux answers ENOTDIR, not ELOOP, for O_DIRECTORY | O_NOFOLLOW on a symlink.
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return "path goes through a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return "path goes through a non-directory"
    return f"cannot be opened ({errno.errorcode.get(exc.errno or 0, 'error')})"


def _bundle_size(root: Path, bounds: BundleBounds) -> int:
    """Total bytes of regular files under ``root`` (links not followed; logs excluded)."""
    total, entries = 0, 0
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                entries += 1
                if entries > bounds.max_entries:
                    raise BundleRejected(f"result has more than {bounds.max_entries} entries")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and not (
                    directory == root and entry.name == LOGS_FILENAME
                ):
                    total += entry.stat(follow_symlinks=False).st_size
    if total > bounds.max_bundle_bytes:
        raise BundleRejected(f"result bundle is larger than {bounds.max_bundle_bytes} bytes")
    return total


def _check_depth(value: object, limit: int) -> None:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise BundleRejected(f"manifest.json: outputs nested deeper than {limit}")
        stack.extend((child, depth + 1) for child in children)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_storable(value: object, what: str) -> None:
    """Refuse strings (keys too) holding NUL or a lone surrogate, anywhere in ``value``.

    Both are valid JSON that PostgreSQL cannot keep (``jsonb`` and ``text`` refuse
    them), so they are refused here, before any write, with :class:`BundleRejected`.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                message = "a string holds NUL or a lone surrogate (the store refuses them)"
                raise BundleRejected(f"{what}: {message}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _parse_manifest(data: bytes) -> dict[str, object]:
    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise BundleRejected("manifest.json: a key appears twice")
        return result

    def no_constants(name: str) -> object:
        raise BundleRejected(f"manifest.json: {name} is not JSON")

    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_constant=no_constants,
            parse_int=jsonsafe.parse_int,
            parse_float=jsonsafe.parse_float,
        )
        jsonsafe.check_json(parsed, "manifest.json")  # storable on both stores: no NUL, no lone surrogate
    except InvalidInput as exc:
        raise BundleRejected(f"manifest.json: {exc.message}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleRejected(f"manifest.json: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(parsed, dict):
        raise BundleRejected("manifest.json: must be a JSON object")
    check_storable(parsed, "manifest.json")
    unknown = sorted(set(parsed) - {"status", "outputs", "patches", "artifacts"})
    if unknown:
        raise BundleRejected(f"manifest.json: unknown keys {', '.join(unknown)[:200]}")
    return parsed


def _collect_files(
    root: Path, kind: str, entries: object, limit: int, bounds: BundleBounds
) -> tuple[BundleFile, ...]:
    if not isinstance(entries, list):
        raise BundleRejected(f"manifest.json: {kind} must be a list of paths")
    if len(entries) > limit:
        raise BundleRejected(f"manifest.json: more than {limit} {kind}")
    paths = [
        check_relpath(entry, kind, bounds.max_path_length - len(kind) - 1, BundleRejected)
        for entry in entries
    ]
    check_unique(paths, kind, BundleRejected)
    collected = []
    for path in paths:
        fd, info = _open_in_bundle(root, f"{kind}/{path}")
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        collected.append(BundleFile(path=path, sha256=digest.hexdigest(), size=info.st_size))
    return tuple(collected)


def collect_result_bundle(result_dir: Path, bounds: BundleBounds) -> ResultManifest:
    """Check the result bundle in ``result_dir`` and return its manifest.

    Enforces every bound in ``bounds`` and the path rules (relative, no ``..``, no
    symlink on any component, no hard link, regular files only, no colliding names,
    present in the bundle). Nothing outside ``result_dir`` is opened. Raises
    :class:`BundleRejected` whose message names the offending path.
    """
    if not stat.S_ISDIR(os.lstat(result_dir).st_mode):
        raise BundleRejected("result: is not a directory")
    total = _bundle_size(result_dir, bounds)
    manifest = _parse_manifest(read_bundle_file(result_dir, "manifest.json", bounds.max_manifest_bytes))
    status = manifest.get("status")
    if status not in (ResultStatus.SUCCEEDED.value, ResultStatus.FAILED.value):
        raise BundleRejected("manifest.json: status must be 'succeeded' or 'failed'")
    outputs = manifest.get("outputs", {})
    if not isinstance(outputs, dict):
        raise BundleRejected("manifest.json: outputs must be a JSON object")
    _check_depth(outputs, bounds.max_output_depth)
    return ResultManifest(
        status=ResultStatus(status),
        outputs=outputs,
        patches=_collect_files(
            result_dir, "patches", manifest.get("patches", []), bounds.max_patches, bounds
        ),
        artifacts=_collect_files(
            result_dir, "artifacts", manifest.get("artifacts", []), bounds.max_artifacts, bounds
        ),
        total_bytes=total,
    )
