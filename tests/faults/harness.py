"""One round of the fault harness: launch runs over REST while faults from a seeded
schedule land, let every run finish, then check each run and measure recovery.

A run passes when it is terminal with the status (and output) it has without faults,
each of its nodes committed exactly once (one node row, one successful attempt, one
output row, one ``node.*`` end event), and its events are consecutive (``seq`` 1..n)
both in the store and as the gateway streams them over SSE. The recovery figures are
measured and held to bounds that are generous today (``Bounds``), so that they can be
tightened as recovery gets faster.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import select

from smithers.shared.store import schema as s
from tests.faults.cluster import WORKERS, Cluster, Settings
from tests.faults.report import Report, percentile
from tests.faults.schedule import Bounds, Fault, Profile, make_schedule
from tests.faults.workflows import expected

TERMINAL = ("succeeded", "failed", "cancelled")
LATE = {"attempt.refused", "attempt.claim_refused"}
SSE_BUDGET_S = 900.0
BASELINE_WINDOW_S = 30.0


@dataclass
class Launch:
    run_id: str
    workflow: str
    run_input: dict[str, Any]
    future: Future[str | None] | None = None


class Round:
    """Runs one round; ``run()`` returns its report and stops every process it started."""

    def __init__(
        self,
        store_kind: str,
        seed: int,
        profile: Profile,
        workdir: Path,
        netns: bool,
        settings: Settings | None = None,
        bounds: Bounds | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.store_kind = store_kind
        self.seed = seed
        self.profile = profile
        self.workdir = workdir
        self.settings = settings or Settings(redispatch_after_s=profile.redispatch_after_s)
        self.bounds = bounds or Bounds()
        self.cluster = Cluster(store_kind, workdir, self.settings, use_netns=netns)
        self.report = Report(store_kind, seed, profile.name)
        self.executions = workdir / "executions.log"
        self.launches: list[Launch] = []
        self.stop_launching = threading.Event()
        self.windows: list[tuple[float, float]] = []
        self.healthy_s: list[float] = []
        self.moving: dict[str, list[float]] = defaultdict(list)
        self.probes: list[tuple[str, float]] = []
        self.unplanned: Counter[str] = Counter()
        self.last_restart: dict[str, float] = {}
        self.memory: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.next_sample = 0.0
        self.t0 = 0.0
        self.last_end = 0.0
        self.log = log

    # -- the round ------------------------------------------------------------------------

    def run(self) -> Report:
        pool = ThreadPoolExecutor(max_workers=6)
        launcher = threading.Thread(target=self._launch_all, args=(pool,), daemon=True)
        try:
            self.cluster.start()
            schedule = make_schedule(
                self.seed,
                self.profile,
                self.store_kind,
                self.cluster.netns is not None,
                self.settings.lease_s,
            )
            self.report.schedule = schedule
            self.log(
                f"   cluster up ({self.store_kind}); {len(schedule)} faults"
                f" over {self.profile.duration_s:.0f}s"
            )
            self.t0 = time.time()
            launcher.start()
            for fault in schedule:
                self._tick_until(self.t0 + fault.at)
                self._inject(fault)
            launcher.join(timeout=self.profile.duration_s + 300)
            self._drain()
            self._finish_probes()
            self._check()
        finally:
            self.stop_launching.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self.cluster.stop()
        return self.report

    def _launch_all(self, pool: ThreadPoolExecutor) -> None:
        rng = random.Random(self.seed + 1)
        for i in range(self.profile.runs):
            due = self.t0 + i / self.profile.rate
            while time.time() < due and not self.stop_launching.is_set():
                time.sleep(min(0.05, max(0.0, due - time.time())))
            if self.stop_launching.is_set():
                return
            pick = rng.random()
            run_input: dict[str, Any] = {
                "executions": str(self.executions),
                "sleep": rng.choice([0.0, 0.05, 0.2, 0.5, 1.0]),
            }
            workflow = "f-fan" if pick < 0.25 else "f-chain"
            if 0.25 <= pick < 0.35:
                run_input["fail"] = True
            launch = Launch(f"r{i:05d}-{self.seed % 100_000}", workflow, run_input)
            launch.future = pool.submit(self.cluster.launch, launch.run_id, workflow, run_input, 120.0)
            self.launches.append(launch)

    def _tick(self) -> None:
        now = time.time()
        for name in self.cluster.dead():
            if now - self.last_restart.get(name, 0.0) >= 2.0 and sum(self.unplanned.values()) < 500:
                self.last_restart[name] = now
                self.unplanned[name] += 1
                self.cluster.restart_dead(name)
        if self.profile.sample_memory_s and now >= self.next_sample:
            self.next_sample = now + self.profile.sample_memory_s
            pids = self.cluster.pids()
            for name, kb in self.cluster.rss().items():
                self.memory[(name, pids.get(name, 0))].append(kb)
        self._poll_probes()
        time.sleep(0.2)

    def _tick_until(self, when: float) -> None:
        for _ in range(1_000_000):
            if time.time() >= when:
                return
            self._tick()

    def _inject(self, fault: Fault) -> None:
        c = self.cluster
        began = time.time()
        self.log(f"   fault {fault}")
        try:
            if fault.kind == "kill":
                c.expected_down.add(fault.target)
                c.kill9(fault.target)
                self._tick_until(time.time() + fault.down_s)
                c.expected_down.discard(fault.target)
                took = c.restart(fault.target)
                if fault.target == "gateway":
                    self.healthy_s.append(took)
            elif fault.kind == "flush":
                assert c.redis is not None
                c.redis.flushall()
                self.probes.append(("redis", time.time()))
            elif fault.kind == "restart" and fault.target == "redis":
                assert c.redis is not None
                c.redis.kill()
                self._tick_until(time.time() + fault.down_s)
                c.redis.start()
                self.probes.append(("redis", time.time()))
            elif fault.kind == "restart":
                assert c.postgres is not None
                c.postgres.stop("immediate")
                self._tick_until(time.time() + fault.down_s)
                c.postgres.start()
                self.probes.append(("postgres", time.time()))
            elif fault.kind == "netcut":
                assert c.netns is not None
                c.netns.cut()
                self._tick_until(time.time() + fault.down_s)
                c.netns.heal()
        except Exception as exc:
            self.report.failures.append(f"fault {fault} could not be applied: {type(exc).__name__}: {exc}")
        self.windows.append((began, time.time()))

    def _poll_probes(self) -> None:
        """Resolve each probe: the first step committed after the service came back."""
        keep = []
        for what, back in self.probes:
            moved = self._first_after(back)
            if moved is None:
                keep.append((what, back))
            else:
                self.moving[what].append(moved - back)
        self.probes = keep

    def _first_after(self, back: float) -> float | None:
        assert self.cluster.engine is not None
        try:
            with self.cluster.engine.store.read() as conn:
                found = conn.execute(
                    select(sqlalchemy.func.min(s.events.c.created_at)).where(
                        s.events.c.created_at > back, s.events.c.type == "node.succeeded"
                    )
                ).scalar()
        except sqlalchemy.exc.SQLAlchemyError:
            return None
        return float(found) if found is not None else None

    def _finish_probes(self) -> None:
        for _ in range(20):
            if not self.probes:
                break
            self._tick()
        for what, _ in self.probes:
            self.moving[what].append(float("inf"))
        self.probes = []

    def _drain(self) -> None:
        """Wait (bounded) until every accepted run is terminal, supervising meanwhile."""
        for launch in self.launches:
            assert launch.future is not None
            for _ in range(10_000):
                if launch.future.done():
                    break
                self._tick()
        ids = [la.run_id for la in self.launches]
        deadline = time.time() + self.profile.drain_s
        pending = set(ids)
        while pending and time.time() < deadline:
            pending = self._not_terminal(pending)
            if pending:
                for _ in range(5):
                    self._tick()
        self.report.figures["drain_left"] = len(pending)

    def _not_terminal(self, ids: set[str]) -> set[str]:
        assert self.cluster.engine is not None
        left: set[str] = set()
        chunk = sorted(ids)
        try:
            with self.cluster.engine.store.read() as conn:
                for k in range(0, len(chunk), 500):
                    part = chunk[k : k + 500]
                    rows = conn.execute(
                        select(s.runs.c.run_id, s.runs.c.status).where(s.runs.c.run_id.in_(part))
                    ).all()
                    done = {r.run_id for r in rows if r.status in TERMINAL}
                    left.update(set(part) - done)
        except sqlalchemy.exc.SQLAlchemyError:
            return ids
        return left

    # -- the check ------------------------------------------------------------------------

    def _load(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        assert self.cluster.engine is not None
        data: dict[str, dict[str, Any]] = {
            i: {"run": None, "nodes": [], "attempts": [], "events": [], "outputs": []} for i in ids
        }
        tables = {"nodes": s.nodes, "attempts": s.attempts, "outputs": s.outputs}
        with self.cluster.engine.store.read() as conn:
            for k in range(0, len(ids), 200):
                part = ids[k : k + 200]
                for row in conn.execute(select(s.runs).where(s.runs.c.run_id.in_(part))):
                    data[row.run_id]["run"] = row
                for key, table in tables.items():
                    for row in conn.execute(select(table).where(table.c.run_id.in_(part))):
                        data[row.run_id][key].append(row)
                query = (
                    select(s.events)
                    .where(s.events.c.run_id.in_(part))
                    .order_by(s.events.c.run_id, s.events.c.seq)
                )
                for row in conn.execute(query):
                    data[row.run_id]["events"].append(row)
        return data

    def _check(self) -> None:
        r = self.report
        accepted: list[Launch] = []
        for launch in self.launches:
            assert launch.future is not None
            refused = launch.future.result() if launch.future.done() else "launch still pending"
            r.check(refused is None, f"launch {launch.run_id}: not accepted over REST: {refused}")
            if refused is None:
                accepted.append(launch)
        data = self._load([la.run_id for la in accepted])
        executions = self._executions()
        sse = self._sse_all([la.run_id for la in accepted])
        counts: Counter[str] = Counter()
        latencies: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
        for launch in accepted:
            problems = self._check_run(launch, data[launch.run_id], sse.get(launch.run_id), executions)
            r.check(not problems, f"run {launch.run_id} ({launch.workflow}): " + "; ".join(problems))
            for ev in data[launch.run_id]["events"]:
                counts[ev.type] += 1
            run = data[launch.run_id]["run"]
            if run is not None and run.finished_at is not None:
                span = (float(run.created_at), float(run.finished_at))
                faulted = any(span[0] <= end + 1.0 and span[1] >= begin for begin, end in self.windows)
                self.last_end = max(self.last_end, span[1])
                latencies[launch.workflow + ("-fail" if launch.run_input.get("fail") else "")].append(
                    (span[0], span[1] - span[0], faulted)
                )
        by_worker = Counter(
            str(a.worker).split("@")[0]
            for d in data.values()
            for a in d["attempts"]
            if a.state == "succeeded"
        )
        r.figures["steps committed by worker"] = dict(sorted(by_worker.items()))
        for name in WORKERS:
            where = " (in its own network namespace)" if name == "w2" and self.cluster.netns else ""
            r.check(by_worker[name] > 0, f"worker {name}{where} committed no step")
        self._figures(counts, latencies, executions)

    def _check_run(
        self,
        launch: Launch,
        d: dict[str, Any],
        streamed: tuple[list[dict[str, Any]], str | None] | None,
        executions: Counter[tuple[str, str, int]],
    ) -> list[str]:
        status, output, nodes = expected(launch.workflow, launch.run_input)
        run = d["run"]
        if run is None:
            return ["lost: no such run in the store"]
        problems: list[str] = []
        if run.status != status:
            problems.append(f"status {run.status}, expected {status}")
        if status == "succeeded" and run.output != output:
            problems.append(f"output {run.output!r}, expected {output!r}")
        found = {(n.node_id, n.iteration): n.status for n in d["nodes"]}
        want = {(n, 0): st for n, st in nodes.items()}
        if found != want:
            problems.append(f"nodes {sorted(found.items())}, expected {sorted(want.items())}")
        by_node: dict[str, Counter[str]] = defaultdict(Counter)
        for a in d["attempts"]:
            by_node[a.node_id][a.state] += 1
        for node, st in nodes.items():
            states = by_node[node]
            if st == "succeeded" and states["succeeded"] != 1:
                problems.append(f"node {node}: {states['succeeded']} successful attempts")
            if st == "failed" and (states["failed"] != 1 or states["succeeded"]):
                problems.append(f"node {node}: attempts {dict(states)}")
            if states["queued"] or states["running"]:
                problems.append(f"node {node}: a live attempt on a finished run ({dict(states)})")
            if executions[(launch.run_id, node, 0)] < 1:
                problems.append(f"node {node}: its step body never ran")
        outs = {o.node_id for o in d["outputs"]}
        if outs != {n for n, st in nodes.items() if st == "succeeded"}:
            problems.append(f"outputs of {sorted(outs)}")
        events = d["events"]
        seqs = [e.seq for e in events]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"store seqs not consecutive: {_gaps(seqs)}")
        ends = Counter((e.type, e.node_id) for e in events if e.type in ("node.succeeded", "node.failed"))
        for node, st in nodes.items():
            if ends[(f"node.{st}", node)] != 1 or sum(v for (_, n), v in ends.items() if n == node) != 1:
                problems.append(f"node {node}: end events {[k for k in ends.elements() if k[1] == node]}")
        run_ends = [i for i, e in enumerate(events) if e.type in {f"run.{t}" for t in TERMINAL}]
        if [events[i].type for i in run_ends] != [f"run.{status}"]:
            problems.append(f"run end events {[events[i].type for i in run_ends]}")
        else:  # after the end only late deliveries, refused and recorded
            late = {e.type for e in events[run_ends[0] + 1 :]} - LATE
            if late:
                problems.append(f"events after the run ended: {sorted(late)}")
        if streamed is None:
            problems.append("not read over SSE")
        else:
            frames, reason = streamed
            got = [(f.get("seq"), f.get("type")) for f in frames]
            if got != [(e.seq, e.type) for e in events]:
                problems.append(
                    f"SSE events differ from the store's ({len(got)} vs {len(events)}:"
                    f" {_gaps([g[0] for g in got])})"
                )
            if reason != "terminal":
                problems.append(f"SSE stream ended with {reason!r}")
        return problems

    def _sse_all(self, ids: list[str]) -> dict[str, tuple[list[dict[str, Any]], str | None]]:
        """Every run's events over SSE, four streams at a time, within a time budget."""
        deadline = time.monotonic() + SSE_BUDGET_S

        def read(run_id: str) -> tuple[list[dict[str, Any]], str | None]:
            if time.monotonic() > deadline:
                return [], f"not read: the {SSE_BUDGET_S:.0f}s budget for reading streams was spent"
            return self.cluster.sse_events(run_id)

        out: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for run_id, got in zip(ids, pool.map(read, ids), strict=True):
                out[run_id] = got
        return out

    def _executions(self) -> Counter[tuple[str, str, int]]:
        seen: Counter[tuple[str, str, int]] = Counter()
        if not self.executions.exists():
            return seen
        for line in self.executions.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                seen[(parts[0], parts[1], int(parts[2]))] += 1
        return seen

    def _figures(
        self,
        counts: Counter[str],
        latencies: dict[str, list[tuple[float, float, bool]]],
        executions: Counter[tuple[str, str, int]],
    ) -> None:
        r, b = self.report, self.bounds
        f = r.figures
        f["runs launched"] = len(self.launches)
        f["faults"] = len(r.schedule)
        steps = counts["attempt.succeeded"] + counts["attempt.failed"]
        f["steps committed"] = steps
        spans = [v for values in latencies.values() for v in values]
        if self.t0 and spans:
            f["steps/s (first launch to last run end)"] = round(steps / max(1.0, self.last_end - self.t0), 1)
        f["step bodies re-executed"] = sum(n - 1 for n in executions.values() if n > 1)
        f["re-sends (attempt.redispatched)"] = counts["attempt.redispatched"]
        f["late results refused (attempt.refused)"] = counts["attempt.refused"]
        f["attempts lost (lease expired)"] = counts["attempt.lost"]
        f["claims refused"] = counts["attempt.claim_refused"]
        f["restarts after an unplanned exit"] = dict(self.unplanned)
        extras: list[float] = []
        for values in latencies.values():
            clean = [(t, v) for t, v, faulted in values if not faulted]
            overall = (
                statistics.median(v for _, v in clean)
                if clean
                else percentile([v for _, v, _ in values], 0.1)
            )
            for t, v, faulted in values:
                if not faulted:
                    continue
                # against untouched runs of its shape launched near it (a backlog moves
                # every run's time), else against all untouched runs of its shape
                near = [u for tu, u in clean if abs(tu - t) <= BASELINE_WINDOW_S]
                base = statistics.median(near) if len(near) >= 3 else overall
                extras.append(max(0.0, v - base))
        p90 = percentile(extras, 0.9)
        f["faulted runs"] = len(extras)
        f["extra time of faulted runs p90 / max (s)"] = f"{p90:.1f} / {max(extras, default=0.0):.1f}"
        r.check(p90 <= b.p90_extra_s, f"p90 extra time of faulted runs {p90:.1f}s > {b.p90_extra_s}s")
        if self.healthy_s:
            worst = max(self.healthy_s)
            f["gateway healthy after restart max (s)"] = round(worst, 2)
            r.check(
                worst <= b.gateway_healthy_s,
                f"gateway healthy {worst:.1f}s after a restart > {b.gateway_healthy_s}s",
            )
        for what, values in sorted(self.moving.items()):
            worst = max(values)
            f[f"runs moving after {what} back max (s)"] = round(worst, 2)
            r.check(worst <= b.moving_s, f"runs moving {worst:.1f}s after {what} came back > {b.moving_s}s")
        if self.profile.sample_memory_s:
            self._memory_checks()

    def _memory_checks(self) -> None:
        r, b = self.report, self.bounds
        flat: dict[str, str] = {}
        for (name, pid), series in sorted(self.memory.items()):
            if len(series) < self.profile.memory_min_samples:
                continue
            skip = max(1, len(series) // 10)
            body = series[skip:]
            third = max(1, len(body) // 3)
            first, last = statistics.median(body[:third]), statistics.median(body[-third:])
            growth = last - first
            flat[f"{name}[{pid}]"] = f"{first / 1024:.0f}->{last / 1024:.0f} MB ({len(series)} samples)"
            allowed = max(first * b.memory_growth_pct / 100, b.memory_growth_kb)
            r.check(growth <= allowed, f"{name} (pid {pid}) RSS grew {first:.0f} -> {last:.0f} kB")
        r.figures["memory (VmRSS, first third -> last third)"] = flat


def _gaps(seqs: list[Any]) -> str:
    return f"{seqs[:5]}...{seqs[-5:]}" if len(seqs) > 10 else str(seqs)
