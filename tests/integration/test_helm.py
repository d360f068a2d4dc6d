"""The Helm chart: helm lint, helm template, and the Kubernetes schemas.

Helm itself comes from helm-python-sdk (Helm's Go library behind a C ABI, in the
wheel: no helm binary, no cluster); kubernetes-validate holds the Kubernetes JSON
schemas. Every value set under helm/smithers/ci/ is linted, rendered and validated.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CI

CHART = Path(__file__).resolve().parents[2] / "helm" / "smithers"
VALUE_SETS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.27.0", "1.33.0")  # the oldest and a recent minor we promise
LINT_WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error

_NEEDED = ("helm_python", "kubernetes_validate", "yaml")
_ABSENT = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if _ABSENT:
    if CI:
        pytest.fail(f"{', '.join(_ABSENT)} required under CI=true (pip install -e '.[dev]')", pytrace=False)
    pytest.skip(f"{', '.join(_ABSENT)} not installed", allow_module_level=True)

import helm_python as helm  # noqa: E402
import kubernetes_validate  # type: ignore[import-untyped]  # noqa: E402
import yaml  # type: ignore[import-untyped]  # noqa: E402


def _values(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "ci" / name).read_text())
    return dict(loaded or {})


def _render(values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``helm template smithers helm/smithers -n smithers``: manifests by template file."""
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="smithers", namespace="smithers", is_install=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if docs:
            out[Path(path).name] = docs
    return out


def _objects(values: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for docs in _render(values).values() for doc in docs}


def _container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    spec = obj["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_is_clean(value_set: str) -> None:
    report = helm.lint(CHART, _values(value_set), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(
    value_set: str, kube_version: str
) -> None:
    rendered = _render(_values(value_set))
    assert rendered, "nothing rendered"
    for template, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, kube_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{template}: {doc['kind']} {doc['metadata']['name']}: {where}: {exc.message}")


def test_defaults_probe_the_health_endpoints_and_migrate_in_a_hook_job() -> None:
    objects = _objects({})
    gateway = _container(objects[("Deployment", "smithers-gateway")], "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    env = {e["name"]: e for e in gateway["env"]}
    assert env["SMITHERS_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "smithers",
        "key": "jwt-secret",
    }
    assert env["SMITHERS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "smithers"

    job = objects[("Job", "smithers-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert _container(job, "migrate")["args"] == ["migrate"]
    assert ("Secret", "smithers-secrets") not in objects  # the operator's Secret is used

    sandbox = objects[("Deployment", "smithers-sandbox-worker")]["spec"]["template"]["spec"]
    assert sandbox["nodeSelector"] == {"smithers.dev/pool": "sandbox"}
    assert sandbox["tolerations"][0]["key"] == "smithers.dev/sandbox"
    assert sandbox["volumes"][-1]["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert _container(objects[("Deployment", "smithers-sandbox-worker")], "sandbox-worker")["args"][:3] == [
        "worker",
        "--queues",
        "sandbox",
    ]
    worker = objects[("Deployment", "smithers-worker")]
    assert worker["spec"]["replicas"] == 2
    assert _container(worker, "worker")["resources"]["requests"]["cpu"]  # autoscaling needs requests

    for kind, name in objects:
        if kind != "Deployment" and kind != "Job":
            continue
        pod = objects[(kind, name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name

    flower = _container(objects[("Deployment", "smithers-flower")], "flower")
    flower_env = {e["name"]: e for e in flower["env"]}
    assert flower_env["SMITHERS_FLOWER_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "flower-password"


def test_full_values_tls_autoscaling_remote_engine_and_init_migrations() -> None:
    objects = _objects(_values("full-values.yaml"))
    gateway = _container(objects[("Deployment", "smithers-gateway")], "gateway")
    assert "--certfile=/etc/smithers/tls/tls.crt" in gateway["args"]
    assert gateway["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert objects[("Service", "smithers-gateway")]["spec"]["ports"][0]["port"] == 443
    assert ("Ingress", "smithers-gateway") in objects
    hpa = objects[("HorizontalPodAutoscaler", "smithers-worker")]
    assert hpa["spec"]["maxReplicas"] == 20
    assert "replicas" not in objects[("Deployment", "smithers-worker")]["spec"]  # the HPA owns it
    assert ("Job", "smithers-migrate") not in objects
    for name in ("gateway", "scheduler", "worker", "sandbox-worker"):
        pod = objects[("Deployment", f"smithers-{name}")]["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["args"] == ["migrate"], name
    sandbox = _container(objects[("Deployment", "smithers-sandbox-worker")], "sandbox-worker")
    assert {"name": "DOCKER_HOST", "value": "tcp://sandbox-engine.sandbox.svc:2376"} in sandbox["env"]
    secret = objects[("Secret", "smithers-secrets")]
    assert set(secret["stringData"]) == {"database-url", "redis-url", "jwt-secret", "flower-password"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {
                "secrets": {
                    "create": True,
                    "databaseUrl": "x",
                    "redisUrl": "y",
                    "jwtSecret": "z",
                    "flowerPassword": "w",
                }
            },
            "migrations.mode=initContainer",
        ),
        ({"gateway": {"tls": {"enabled": True}}}, "gateway.tls.secretName"),
        ({"migrations": {"mode": "sometimes"}}, "migrations.mode"),
        ({"secrets": {"existingSecret": ""}}, "secrets.existingSecret"),
    ],
)
def test_inconsistent_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        _render(values)
