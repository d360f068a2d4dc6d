"""``python -m tests.faults``: run the fault harness from the repository's root.

    python -m tests.faults                       # the short profile on both stores
    python -m tests.faults --store sqlite --seed 7
    python -m tests.faults --soak --store postgres   # 10,000 runs, memory sampled

The closing line is ``N passed, N failed``; a failure prints the seed and the fault
schedule that reproduces it. Exit status 0 when nothing failed, 1 otherwise, 2 for a
machine that cannot run it (no redis-server, no initdb).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.cluster import Settings
from tests.faults.harness import Round
from tests.faults.report import Report
from tests.faults.schedule import SHORT, SOAK, Bounds
from tests.faults.services import ServiceError, netns_unavailable, postgres_available


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--seed", type=int, default=None, help="the fault schedule's seed (default: random)")
    p.add_argument("--soak", action="store_true", help="the long profile: 10,000 runs, memory sampled")
    p.add_argument("--runs", type=int, default=None, help="runs to launch (overrides the profile)")
    p.add_argument("--rate", type=float, default=None, help="launches per second")
    p.add_argument("--fault-every", type=float, default=None, help="mean seconds between faults")
    p.add_argument("--drain", type=float, default=None, help="seconds the runs may take to finish after")
    p.add_argument("--sample-memory", type=float, default=None, help="seconds between RSS samples (0: off)")
    p.add_argument("--lease", type=float, default=3.0, help="SMITHERS_LEASE_SECONDS of the processes")
    p.add_argument(
        "--redispatch-after",
        type=float,
        default=None,
        help="SMITHERS_REDISPATCH_AFTER (default the engine's, 300 s)",
    )
    p.add_argument("--no-netns", action="store_true", help="run both workers on this host's network")
    p.add_argument("--p90-extra-max", type=float, default=Bounds.p90_extra_s)
    p.add_argument("--gateway-healthy-max", type=float, default=Bounds.gateway_healthy_s)
    p.add_argument("--moving-max", type=float, default=Bounds.moving_s)
    p.add_argument("--memory-growth-pct", type=float, default=Bounds.memory_growth_pct)
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep logs and files here (default: a temp dir)"
    )
    args = p.parse_args(argv)
    for name in ("runs", "rate", "fault_every", "drain", "lease", "redispatch_after"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    profile = SOAK if args.soak else SHORT
    overrides = {
        "runs": args.runs,
        "rate": args.rate,
        "fault_every_s": args.fault_every,
        "drain_s": args.drain,
        "sample_memory_s": args.sample_memory,
    }
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in stores and (why := postgres_available()):
        print(f"cannot run on postgres: {why}", file=sys.stderr)
        return 2
    netns = not args.no_netns
    if netns and (why := netns_unavailable()):
        print(f"note: one worker on its own network namespace is off ({why}); no network cuts")
        netns = False
    settings = Settings(
        lease_s=args.lease, redispatch_after_s=args.redispatch_after or profile.redispatch_after_s
    )
    bounds = Bounds(
        p90_extra_s=args.p90_extra_max,
        gateway_healthy_s=args.gateway_healthy_max,
        moving_s=args.moving_max,
        memory_growth_pct=args.memory_growth_pct,
    )
    reports: list[Report] = []
    for store in stores:
        workdir = (
            args.workdir / store
            if args.workdir
            else Path(tempfile.mkdtemp(prefix=f"smithers-faults-{store}-"))
        )
        began = time.monotonic()
        print(
            f"== {store}: seed {seed}, {profile.runs} runs at {profile.rate}/s (workdir {workdir})",
            flush=True,
        )
        try:
            report = Round(store, seed, profile, workdir, netns, settings, bounds, log=_say).run()
        except ServiceError as exc:
            report = Report(store, seed, profile.name)
            report.failures.append(f"the cluster did not start: {exc}")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        report.figures["wall time (s)"] = round(time.monotonic() - began, 1)
        report.replay = replay(args)
        for line in report.lines():
            print(line, flush=True)
        reports.append(report)
        if args.workdir is None and not report.failures:
            shutil.rmtree(workdir, ignore_errors=True)
    passed = sum(r.passed for r in reports)
    failed = sum(r.failed for r in reports)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def replay(args: argparse.Namespace) -> str:
    """The options besides --store, --seed and --soak that shaped this round."""
    out = ""
    for name in ("runs", "rate", "fault_every", "drain", "sample_memory", "redispatch_after"):
        value = getattr(args, name)
        if value is not None:
            out += f" --{name.replace('_', '-')} {value:g}"
    if args.lease != 3.0:
        out += f" --lease {args.lease:g}"
    if args.no_netns:
        out += " --no-netns"
    return out


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
