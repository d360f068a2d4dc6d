"""Egress by allowlist for Docker sandboxes: an internal network and a proxy on it.

For a step whose network policy is ``allowlist``, the runtime creates a network of its
own with ``internal=True`` (no route out of it, no published port) whose bridge has
no address on the host (``inhibit_ipv4``: the host's services are not reachable
through a gateway address either; verified on Docker 20.10), and a proxy
container attached both to it (as ``egress-proxy``) and to the default bridge. The step
joins only the internal network, with ``HTTP_PROXY``/``HTTPS_PROXY`` pointing at the
proxy, which admits only the listed ``host:port`` pairs
(:mod:`smithers.workers.runtime.egress_proxy`). A step that ignores the proxy
variables has nowhere to go: the internal network reaches nothing but the proxy.

The proxy runs trusted code (this package's proxy source, given to ``python3 -c``) as
``nobody``, read-only, without capabilities, with small memory and PID limits, in an
image with Python 3 (``SMITHERS_SANDBOX_PROXY_IMAGE``; never pulled). Network and proxy
carry the sandbox's labels, so orphan cleanup finds them, and are removed with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.client import DockerClient
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import LogConfig

from smithers.shared.errors import SandboxError
from smithers.shared.sandbox import SandboxSpec

__all__ = ["PROXY_ALIAS", "Egress", "start_egress"]

log = logging.getLogger(__name__)

PROXY_ALIAS = "egress-proxy"
_SOURCE = (Path(__file__).parent / "egress_proxy.py").read_text()
_LOG_CONFIG = LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "1"})


@dataclass
class Egress:
    """The network a step joins, the proxy it must use, and how to remove both."""

    network: Network
    proxy: Container

    @property
    def env(self) -> dict[str, str]:
        """The proxy variables the step gets (upper and lower case, as tools differ)."""
        url = f"http://{PROXY_ALIAS}:3128"
        names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
        return {**{name: url for name in names}, "NO_PROXY": "", "no_proxy": ""}

    def remove(self) -> None:
        """Remove the proxy and the network; failures are logged, never raised."""
        for step in ("proxy", "network"):
            try:
                if step == "proxy":
                    self.proxy.remove(force=True)
                else:
                    self.network.remove()
            except docker.errors.NotFound:
                pass
            except (docker.errors.DockerException, OSError) as exc:
                log.warning("could not remove egress %s: %s", self.network.name, type(exc).__name__)


def _wait_listening(proxy: Container, timeout_s: float = 15.0) -> None:
    """Wait until the proxy says it listens, so the step's first request finds it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if b"listening" in proxy.logs(stdout=False, stderr=True, tail=5):
            return
        proxy.reload()
        if proxy.status not in ("created", "running"):
            break
        time.sleep(0.05)
    raise SandboxError(f"egress proxy did not start (does its image have python3?): {proxy.status}")


def start_egress(
    client: DockerClient, name: str, spec: SandboxSpec, labels: dict[str, str], proxy_image: str
) -> Egress:
    """Create the internal network and start the proxy for ``spec.egress``.

    Raises Docker SDK errors; the caller maps them. Whatever was created before an
    error is removed.
    """
    # internal: no route out; inhibit_ipv4: the bridge has no address on the host either,
    # so the step cannot reach the host's own services through its gateway address
    network = client.networks.create(
        name,
        driver="bridge",
        internal=True,
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
        labels=labels,
    )
    proxy: Container | None = None
    try:
        proxy = client.containers.create(
            proxy_image,
            entrypoint=["python3", "-c", _SOURCE],
            command=[json.dumps(list(spec.egress))],
            name=f"{name}-proxy",
            user="65534:65534",
            labels=labels,
            init=True,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode="bridge",
            mem_limit="64m",
            memswap_limit="64m",
            pids_limit=96,
            nano_cpus=int(0.5e9),
            log_config=_LOG_CONFIG,
        )
        network.connect(proxy, aliases=[PROXY_ALIAS])
        proxy.start()
        _wait_listening(proxy)
    except BaseException:
        with contextlib.suppress(docker.errors.DockerException, OSError):
            if proxy is not None:
                proxy.remove(force=True)
            network.remove()
        raise
    return Egress(network, proxy)
