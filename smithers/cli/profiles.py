"""Named gateway profiles of the remote command line (``smithers login``).

One JSON file, ``$XDG_CONFIG_HOME/smithers/profiles.json`` (``~/.config`` when the variable
is unset), holds ``{"default": NAME, "profiles": {NAME: {"url", "token", "subject"}}}``.
It holds bearer tokens, so it is created 0600 in a 0700 directory and written whole
through a temporary file of the same mode (a reader never sees half a file, and no
moment exists where the token is readable by others).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smithers.shared import settings
from smithers.shared.errors import InvalidInput

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Profile:
    """A gateway and the token to use with it."""

    name: str
    url: str
    token: str
    subject: str | None = None


def config_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/smithers``, else ``~/.config/smithers``."""
    base = env.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "smithers"


def profiles_file(env: Mapping[str, str]) -> Path:
    """Where the profiles are kept."""
    return config_dir(env) / "profiles.json"


def check_name(name: str) -> str:
    """A profile name: letters, digits, ``_.-``, at most 64 characters."""
    if not PROFILE_NAME.fullmatch(name):
        raise InvalidInput(f"profile name {name!r} must match {PROFILE_NAME.pattern}")
    return name


def read_all(env: Mapping[str, str]) -> dict[str, Any]:
    """The file's content, ``{"default": None, "profiles": {}}`` when there is none."""
    path = profiles_file(env)
    try:
        raw = path.read_bytes()[:MAX_FILE_BYTES]
    except FileNotFoundError:
        return {"default": None, "profiles": {}}
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidInput(f"{path} is not JSON; remove it and run `smithers login` again") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise InvalidInput(f"{path} is not a smithers profiles file")
    return data


def load(env: Mapping[str, str], name: str | None = None, url: str | None = None) -> Profile | None:
    """The profile named ``name``; else the one for ``url``; else the default. None if absent."""
    data = read_all(env)
    profiles: dict[str, Any] = data["profiles"]
    chosen: str | None = name
    if chosen is None and url is not None:
        chosen = next((n for n, p in profiles.items() if _same_url(p.get("url"), url)), None)
    if chosen is None and url is None:
        chosen = data.get("default")
    entry = profiles.get(chosen) if chosen is not None else None
    if not isinstance(entry, dict):
        if name is not None:
            raise InvalidInput(f"no profile {name!r} in {profiles_file(env)}; run `smithers login URL`")
        return None
    return Profile(
        name=str(chosen),
        url=str(entry.get("url", "")),
        token=str(entry.get("token", "")),
        subject=entry.get("subject"),
    )


def save(env: Mapping[str, str], profile: Profile, make_default: bool = True) -> Path:
    """Add or replace ``profile``; the file is written 0600."""
    data = read_all(env)
    data["profiles"][check_name(profile.name)] = {
        "url": profile.url,
        "token": profile.token,
        "subject": profile.subject,
    }
    if make_default or not data.get("default"):
        data["default"] = profile.name
    return _write(env, data)


def remove(env: Mapping[str, str], name: str) -> bool:
    """Forget a profile; False when there was none of that name."""
    data = read_all(env)
    if data["profiles"].pop(check_name(name), None) is None:
        return False
    if data.get("default") == name:
        data["default"] = next(iter(data["profiles"]), None)
    _write(env, data)
    return True


def _write(env: Mapping[str, str], data: dict[str, Any]) -> Path:
    path = profiles_file(env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and if the file existed
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _same_url(a: Any, b: str) -> bool:
    return isinstance(a, str) and a.rstrip("/") == b.rstrip("/")


@dataclass(frozen=True)
class Target:
    """The gateway the command line talks to, and the token it sends."""

    url: str
    token: str | None
    profile: str | None


def target(env: Mapping[str, str]) -> Target | None:
    """The remote target of this environment, or None for the local command line."""
    url = settings.GATEWAY_URL.read(env).strip()
    name = settings.PROFILE.read(env).strip() or None
    token = settings.TOKEN.read(env).strip() or None
    if not url and name is None:
        return None
    profile = None
    if name is not None or token is None:  # the file is read only when it is needed
        profile = load(env, name=name, url=url or None)
    if not url:
        assert profile is not None  # load raised for a named profile that is not there
        url = profile.url
    if token is None and profile is not None:
        token = profile.token or None
    return Target(url=url, token=token, profile=profile.name if profile is not None else None)
