"""The request bundle as the tar archive a Docker sandbox receives in ``/work``."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from smithers.shared.bundle import RESULT_DIRNAME
from smithers.shared.errors import BundleRejected, SandboxError
from smithers.shared.sandbox import SANDBOX_UID

__all__ = ["request_tar"]


def request_tar(request_dir: Path, limit: int) -> bytes:
    """Tar ``request/`` plus empty ``result/``, ``tmp/``, all owned by the sandbox user.

    Only directories and regular files are taken, found without following links.
    """
    try:
        is_dir = stat.S_ISDIR(os.lstat(request_dir).st_mode)
    except FileNotFoundError:
        is_dir = False
    if not is_dir:
        raise SandboxError("request: missing (write_request_bundle first)")
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = (
                tarfile.DIRTYPE,
                0o700,
                SANDBOX_UID,
                SANDBOX_UID,
            )
            tar.addfile(info)

        for name in (
            "request",
            RESULT_DIRNAME,
            f"{RESULT_DIRNAME}/patches",
            f"{RESULT_DIRNAME}/artifacts",
            "tmp",
        ):
            add_dir(name)
        for current, dirs, files in os.walk(request_dir, followlinks=False):
            rel_dir = Path("request") / Path(current).relative_to(request_dir)
            for name in sorted(dirs):
                if os.path.islink(Path(current) / name):
                    raise SandboxError(f"request: {rel_dir / name} is a symbolic link")
                add_dir(str(rel_dir / name))
            for name in sorted(files):
                path = Path(current) / name
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as handle:
                    info_stat = os.fstat(handle.fileno())
                    if not stat.S_ISREG(info_stat.st_mode):
                        raise SandboxError(f"request: {rel_dir / name} is not a regular file")
                    total += info_stat.st_size
                    if total > limit:
                        raise BundleRejected(f"request: larger than {limit} bytes")
                    info = tarfile.TarInfo(str(rel_dir / name))
                    info.size, info.mode = info_stat.st_size, 0o600
                    info.uid = info.gid = SANDBOX_UID
                    tar.addfile(info, handle)
    return buffer.getvalue()
