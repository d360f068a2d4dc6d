"""What a round of the fault harness does and is held to: its profile (how many runs, how
fast, how often a fault lands), the bounds of its recovery figures, and the schedule of
faults drawn from ``random.Random(seed)`` alone, so that a seed names a schedule."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.faults.cluster import SCHEDULERS, WORKERS


@dataclass(frozen=True)
class Fault:
    """One fault of the schedule: ``at`` seconds into the round, down for ``down_s``."""

    at: float
    kind: str  # kill | flush | restart | netcut
    target: str  # a process name, redis or postgres
    down_s: float

    def __str__(self) -> str:
        return f"{self.at:7.1f}s  {self.kind:<7} {self.target:<8} down {self.down_s:.1f}s"


@dataclass
class Bounds:
    """The recovery figures' bounds (seconds, or percent); generous enough for today's
    engine with 3 s leases, meant to be tightened (issue 23, item 3). The gateway's is
    2.5 times its 2 s target: a restart measured 1-2.5 s on a loaded machine
    (bench/restart.py, docs/benchmarks.md "Restart"), and 4-10 s before it stopped
    exec'ing a second interpreter."""

    p90_extra_s: float = 60.0
    gateway_healthy_s: float = 5.0
    moving_s: float = 60.0
    memory_growth_pct: float = 25.0
    memory_growth_kb: int = 30_000


@dataclass
class Profile:
    """How long, how fast and how often."""

    name: str
    runs: int
    rate: float  # launches per second
    fault_every_s: float  # mean gap between faults
    drain_s: float  # how long the runs may take to finish once launching stopped
    sample_memory_s: float = 0.0  # 0: no memory sampling
    memory_min_samples: int = 8
    # SMITHERS_REDISPATCH_AFTER of the processes: the engine's default. A message lost
    # with the broker (flush, restart) is re-sent at the next sweep (the broker epoch,
    # docs/architecture.md "Lost messages"); a short delay would re-send every message
    # merely waiting in a backlog again and again
    redispatch_after_s: float = 300.0

    @property
    def duration_s(self) -> float:
        return self.runs / self.rate


SHORT = Profile("short", runs=140, rate=2.0, fault_every_s=6.0, drain_s=150.0)
SOAK = Profile(
    "soak",
    runs=10_000,
    rate=2.0,
    fault_every_s=20.0,
    drain_s=900.0,
    sample_memory_s=10.0,
    redispatch_after_s=300.0,
)


def make_schedule(seed: int, profile: Profile, store_kind: str, netns: bool, lease_s: float) -> list[Fault]:
    """The faults of a round, from ``random.Random(seed)`` alone: one of every kind first
    (in a seeded order), then kinds drawn at random; each fault is over before the next."""
    rng = random.Random(seed)
    kinds = [("kill", "gateway"), *[("kill", n) for n in (*SCHEDULERS, *WORKERS)]]
    kinds += [("flush", "redis"), ("restart", "redis")]
    if store_kind == "postgres":
        kinds.append(("restart", "postgres"))
    if netns:
        kinds.append(("netcut", "w2"))
    first = kinds[:]
    rng.shuffle(first)
    faults: list[Fault] = []
    t = rng.uniform(2.0, profile.fault_every_s)
    while t < profile.duration_s - 2 and len(faults) < 100_000:
        kind, target = first.pop(0) if first else rng.choice(kinds)
        if kind == "netcut":
            down = rng.uniform(0.5, 3.0) * lease_s  # shorter and longer than a lease
        elif kind == "flush":
            down = 0.0
        elif kind == "kill":
            down = rng.uniform(0.2, 2.0)
        else:
            down = rng.uniform(0.5, 4.0)
        faults.append(Fault(round(t, 1), kind, target, round(down, 1)))
        t += down + rng.uniform(0.5, 1.5) * profile.fault_every_s
    return faults
