"""A round's report: one check a run plus the figures' bounds, printed like a test run
(``<store>: N passed, N failed``); a failure prints the seed and the fault schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.faults.schedule import Fault


@dataclass
class Report:
    """What a round found: failures (each a line), figures, and the schedule."""

    store_kind: str
    seed: int
    profile: str
    schedule: list[Fault] = field(default_factory=list)
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    replay: str = ""  # the command line's other options, for the line that reproduces it

    @property
    def failed(self) -> int:
        return len(self.failures)

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)

    def lines(self) -> list[str]:
        out = [f"== fault harness: store={self.store_kind} profile={self.profile} seed={self.seed}"]
        out += [f"   {k}: {v}" for k, v in self.figures.items()]
        for f in self.failures[:60]:
            out.append(f"FAILED {f}")
        if len(self.failures) > 60:
            out.append(f"... and {len(self.failures) - 60} more failures")
        if self.failures:
            soak = " --soak" if self.profile == "soak" else ""
            command = f"python -m tests.faults --store {self.store_kind} --seed {self.seed}"
            out.append(f"reproduce: {command}{soak}{self.replay}")
            out.append("fault schedule:")
            out += [f"   {f}" for f in self.schedule]
        out.append(f"{self.store_kind}: {self.passed} passed, {self.failed} failed")
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
