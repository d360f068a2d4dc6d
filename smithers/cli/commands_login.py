"""``smithers login URL`` and ``smithers logout``: named gateway profiles for the remote
command line (:mod:`smithers.cli.profiles`)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from smithers.cli import exitcodes, profiles
from smithers.client import Client
from smithers.shared.errors import InvalidInput

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]
MAX_TOKEN_CHARS = 16_384


def _token(args: argparse.Namespace) -> str:
    """The token to keep: SMITHERS_TOKEN, else stdin when it is not a terminal, else a prompt."""
    token = os.environ.get("SMITHERS_TOKEN", "").strip()
    if not token:
        if sys.stdin.isatty():
            token = getpass.getpass(f"token for {args.url}: ").strip()
        else:
            token = sys.stdin.read(MAX_TOKEN_CHARS + 1).strip()
    if not token:
        raise InvalidInput("no token given: pipe it on stdin, set SMITHERS_TOKEN, or type it when asked")
    if len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InvalidInput("that is not a bearer token (one line, no spaces)")
    return token


def cmd_login(args: argparse.Namespace) -> int:
    """Check the token against the gateway (``GET /v1/session``), then keep the profile."""
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{args.url!r}: give the gateway's URL, http:// or https://")
    name = profiles.check_name(args.profile)
    token = _token(args)
    with Client(url, token) as api:
        who = api.whoami()  # a bad token is refused here (exit 11) and nothing is written
    path = profiles.save(os.environ, profiles.Profile(name=name, url=url, token=token, subject=who.subject))
    print(f"logged in to {url} as {who.subject} ({','.join(who.scopes)}); profile {name!r} in {path}")
    print(f"use it with SMITHERS_GATEWAY_URL={url} or SMITHERS_PROFILE={name}", file=sys.stderr)
    return exitcodes.OK


def cmd_logout(args: argparse.Namespace) -> int:
    """Forget a profile (its token is removed from the file; it is not revoked)."""
    if not profiles.remove(os.environ, args.profile):
        print(f"no profile {args.profile!r}")
        return exitcodes.NOT_FOUND
    print(f"profile {args.profile!r} removed (revoke its token with `smithers token revoke JTI`)")
    return exitcodes.OK


def register(add: Add) -> None:
    """Add ``login`` and ``logout``."""
    p = add("login", cmd_login)
    p.add_argument("url", help="the gateway, e.g. https://smithers.example:8080")
    p.add_argument("--profile", default="default", help="the profile's name (default: default)")
    p = add("logout", cmd_logout)
    p.add_argument("--profile", default="default")
