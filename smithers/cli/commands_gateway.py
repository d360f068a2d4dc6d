"""``smithers gateway`` and ``smithers token issue|revoke|list``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable

from smithers.cli import exitcodes
from smithers.cli.context import deployment_of, store_of
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import GrantKind
from smithers.shared.patching import gevent_patched
from smithers.shared.settings import parse_duration
from smithers.shared.store.grants import ControlPlaneStore

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def actor_of() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def cmd_gateway(args: argparse.Namespace) -> int:
    """Check the options and the key, migrate, then serve from this process: the console
    script patched the standard library for gevent workers before importing anything
    (:mod:`smithers.cli.entry`). When the patching does not match the worker class (a
    caller other than the console script, an abbreviated option), it becomes
    ``python -m smithers.gateway``: a fresh interpreter that patches only for gevent."""
    from smithers.gateway.config import GatewayConfig  # noqa: PLC0415 (keeps other commands light)
    from smithers.gateway.server import options_from  # noqa: PLC0415

    dep = deployment_of(args)
    GatewayConfig.from_env(os.environ, dep)  # a missing key or bad setting fails here, clearly
    options = options_from(args, os.environ)
    options.check()
    store_of(dep, create=True).close()  # migrate once, before the workers start
    env = {
        **os.environ,
        "SMITHERS_DATABASE_URL": dep.database_url,
        "SMITHERS_GATEWAY_WORKER_CLASS": options.worker_class,
    }
    if dep.redis_url:
        env["SMITHERS_REDIS_URL"] = dep.redis_url
    if dep.data_dir is not None:
        env["SMITHERS_DATA_DIR"] = str(dep.data_dir)
    server_argv = ["--host", options.host, "--port", str(options.port)]
    server_argv += ["--workers", str(options.workers), "--worker-class", options.worker_class]
    server_argv += ["--threads", str(options.threads)]
    if options.tls:
        server_argv += ["--certfile", str(options.certfile), "--keyfile", str(options.keyfile)]
    if (options.worker_class == "gevent") != gevent_patched():
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [sys.executable, "-m", "smithers.gateway", *server_argv]
        os.execve(sys.executable, argv, env)  # noqa: S606 (a fresh interpreter: gevent patches first)
    # Served from this interpreter: a restarted gateway answers in about half the time
    # a second interpreter importing everything again took (docs/benchmarks.md, "Restart").
    from smithers.gateway.server import main as serve  # noqa: PLC0415

    os.environ.update(env)
    return serve(server_argv)


def _control(args: argparse.Namespace) -> ControlPlaneStore:
    from smithers.shared.grants import TtlPolicy  # noqa: PLC0415

    return ControlPlaneStore(store_of(deployment_of(args)), TtlPolicy.from_env(os.environ))


def cmd_token_issue(args: argparse.Namespace) -> int:
    from smithers.gateway.auth import mint_with_key  # noqa: PLC0415
    from smithers.gateway.config import key_dir, load_key_pair, load_signing_key  # noqa: PLC0415

    dep = deployment_of(args)
    ttl = parse_duration(args.ttl, "--ttl") if args.ttl else None
    key_pair = load_key_pair(os.environ)
    if key_pair is not None and not key_pair.private_pem:
        raise InvalidInput(
            f"SMITHERS_JWT_ALGORITHM={key_pair.algorithm}: issuing a token needs the private key"
            " (SMITHERS_JWT_PRIVATE_KEY_FILE); the public key only verifies"
        )
    control = _control(args)  # first: no store, no key file made in a stray directory
    key = "" if key_pair is not None else load_signing_key(os.environ, key_dir(os.environ, dep))
    grant = control.issue(
        subject=args.subject,
        scopes=args.scopes,
        kind=GrantKind(args.kind),
        ttl_s=ttl,
        issuer=args.issuer or "cli",
        actor=actor_of(),
        note=args.note,
    )
    token = mint_with_key(key, "smithers", grant, key_pair)
    print(
        f"issued {grant.jti} to {grant.subject} ({','.join(s.value for s in grant.scopes)}),"
        f" expires {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(grant.expires_at))}",
        file=sys.stderr,
    )
    print(token, flush=True)
    return exitcodes.OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    grant = _control(args).revoke(args.jti, actor=actor_of(), reason=args.reason)
    print(f"revoked {grant.jti} ({grant.subject})")
    return exitcodes.OK


def cmd_token_list(args: argparse.Namespace) -> int:
    now = time.time()
    grants = _control(args).grants(subject=args.subject, active_only=not args.all)
    for g in grants:
        expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(g.expires_at))
        scopes = ",".join(s.value for s in g.scopes)
        print(f"{g.jti}  {g.subject:<24} {g.kind.value:<10} {g.state(now).value:<8} {expires}  {scopes}")
    return exitcodes.OK


def cmd_token(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "token_fn", None)
    if handler is None:
        raise InvalidInput("usage: smithers token issue|revoke|list")
    return handler(args)


def register(add: Add) -> None:
    """Add the ``gateway`` and ``token`` sub-commands."""
    from smithers.gateway.server import add_options  # noqa: PLC0415

    add_options(add("gateway", cmd_gateway))

    p = add("token", cmd_token)
    sub = p.add_subparsers(dest="token_command", required=True)
    issue = sub.add_parser("issue", help="issue a grant and print its token alone on stdout")
    issue.add_argument("--subject", required=True)
    issue.add_argument("--scopes", required=True, help="comma-separated: run:read,run:write,...")
    issue.add_argument("--ttl", default=None, help="lifetime such as 15m, 12h, 30d (default by --kind)")
    issue.add_argument("--kind", choices=[k.value for k in GrantKind], default=GrantKind.PERSON.value)
    issue.add_argument("--issuer", default=None, help="local mode: the issuer recorded (default cli)")
    issue.add_argument("--note", default=None)
    issue.set_defaults(token_fn=cmd_token_issue)
    revoke = sub.add_parser("revoke", help="revoke a grant by its jti")
    revoke.add_argument("jti")
    revoke.add_argument("--reason", default=None)
    revoke.set_defaults(token_fn=cmd_token_revoke)
    listing = sub.add_parser("list", help="list active grants (--all: revoked and expired too)")
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--subject", default=None)
    listing.set_defaults(token_fn=cmd_token_list)
    for child in (issue, revoke, listing):
        child.add_argument(
            "--data-dir",
            help="embedded deployment directory (default: SMITHERS_DATA_DIR, else the nearest .smithers/)",
        )
