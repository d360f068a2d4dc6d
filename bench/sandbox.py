"""Sandbox latency: wall time of DockerRuntime.run for a trivial step, start to result.

Each run writes a request bundle, creates the /work volume and the container, copies
the request in, runs a step that writes a one-line manifest, copies and checks the
result, and removes everything. Needs a Docker engine and the sandbox image
(``.ci/docker-setup.sh``).

    .venv/bin/python bench/sandbox.py [--runs 50]

The last line is ``sandbox_p50_ms=.. sandbox_p99_ms=..`` (nearest-rank percentiles).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import uuid
from pathlib import Path

from smithers.shared.bundle import BundleBounds, collect_result_bundle, write_request_bundle
from smithers.shared.sandbox import SandboxSpec
from smithers.workers.runtime import DockerRuntime

STEP = 'echo \'{"status": "succeeded", "outputs": {"ok": true}}\' > /work/result/manifest.json'


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--image", default="smithers-sandbox:latest")
    args = parser.parse_args()

    worker = f"bench-{uuid.uuid4().hex[:8]}"
    runtime = DockerRuntime(worker)
    runtime.ping()
    spec = SandboxSpec(image=args.image, command=("sh", "-c", STEP), timeout_s=30)
    samples: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="smithers-bench-") as root:
            for i in range(args.runs + 1):  # run 0 warms the engine up and is not counted
                sandbox_dir = write_request_bundle(
                    Path(root), "bench", f"s{i}", {"i": i}, {}, {"prompt.txt": "hi"}
                )
                started = time.perf_counter()
                outcome = runtime.run(spec, sandbox_dir, {"smithers.bench": "1"}, {})
                manifest = collect_result_bundle(sandbox_dir / "result", BundleBounds())
                elapsed = time.perf_counter() - started
                if outcome.exit_code != 0 or manifest.outputs != {"ok": True}:
                    raise SystemExit(f"run {i} failed: {outcome}")
                if i:
                    samples.append(elapsed * 1000)
    finally:
        runtime.remove_orphans(worker)
    print(
        f"runs={len(samples)} min_ms={min(samples):.0f} mean_ms={sum(samples) / len(samples):.0f}"
        f" max_ms={max(samples):.0f}"
    )
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    print(f"sandbox_p50_ms={p50:.0f} sandbox_p99_ms={p99:.0f}")


if __name__ == "__main__":
    main()
