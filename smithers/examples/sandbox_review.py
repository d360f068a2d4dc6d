"""sandbox-review: a sandbox step proposes a patch, a person reviews it, a task uses it.

propose (sandbox, Docker) ── review (REST or CLI) ── release (task)

``propose`` runs in a container with no network, as an unprivileged user on a
read-only root filesystem. Its workspace is the two files declared below; it bumps
the version, writes the change as a unified diff to ``/work/result/patches/`` and a
manifest to ``/work/result/manifest.json``. The sandbox worker checks the bundle,
applies the patch to the workspace and holds the node for review. Once accepted,
``release`` reads the patched files.

Run it (Docker and the ``smithers-sandbox:latest`` image from ``.ci/docker-setup.sh``)::

    export SMITHERS_WORKFLOWS=smithers.examples.sandbox_review
    smithers up &                                 # scheduler, step worker, gateway
    smithers worker --queues sandbox --name sbx1 &
    smithers run sandbox-review --input '{"version": "0.2.0"}'   # exits 3: waiting
    smithers sandboxes RUN --diff                 # what the step proposes
    smithers review RUN propose --accept --note "looks right"
    smithers watch RUN

or over REST with a token holding ``approval:read`` and ``approval:submit``::

    GET  /v1/runs/RUN/sandboxes
    POST /v1/runs/RUN/sandboxes/SANDBOX_ID/review   {"accept": true, "note": "looks right"}

``SMITHERS_EXAMPLE_SANDBOX_IMAGE`` picks another image.
"""

from __future__ import annotations

import os
import re
from typing import Any

from smithers import SandboxSpec, StepContext, Workflow

IMAGE = os.environ.get("SMITHERS_EXAMPLE_SANDBOX_IMAGE", "smithers-sandbox:latest")

WORKSPACE = {
    "app/version.py": '__version__ = "0.1.0"\n',
    "CHANGELOG.md": "# Changelog\n\n## 0.1.0\n\n- First release.\n",
}

# POSIX sh and coreutils only: the default image has no Python.
BUMP = r"""
set -eu
version=$(sed -n 's/.*"version": *"\([0-9][0-9.]*\)".*/\1/p' /work/request/input.json)
version=${version:-0.1.1}
cd /work/tmp
cp -R /work/request/files a
cp -R /work/request/files b
printf '__version__ = "%s"\n' "$version" > b/app/version.py
{ printf '# Changelog\n\n## %s\n\n- Proposed in a sandbox.\n' "$version"; tail -n +2 a/CHANGELOG.md; } \
    > b/CHANGELOG.md
diff -ruN a b > /work/result/patches/bump-version.patch || [ $? -eq 1 ]
printf '{"status": "succeeded", "outputs": {"version": "%s"}, "patches": ["bump-version.patch"]}' \
    "$version" > /work/result/manifest.json
"""

wf = Workflow("sandbox-review", version="1", description="a sandbox proposes a patch; a person reviews it")

wf.sandbox(
    "propose",
    SandboxSpec(image=IMAGE, command=("sh", "-c", BUMP), files=WORKSPACE, memory_mb=128, timeout_s=60),
)


@wf.task(after=["propose"])
def release(ctx: StepContext) -> dict[str, Any]:
    """Use the accepted workspace: the version file as the patch left it."""
    files = ctx.outputs["propose"]["workspace"]["files"]
    match = re.search(r'__version__ = "([^"]+)"', files["app/version.py"])
    return {
        "version": match.group(1) if match else None,
        "changelog_head": files["CHANGELOG.md"].splitlines()[2],
        "patches": [p["path"] for p in ctx.outputs["propose"]["patches"]],
    }
