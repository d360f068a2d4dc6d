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
CUSTOM_RESOURCES = {
    "keda.sh/v1alpha1": "ScaledObject",
    "monitoring.coreos.com/v1": "ServiceMonitor",
}  # rendered by the chart, validated here by shape only

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
            if doc["apiVersion"] in CUSTOM_RESOURCES:  # not in the Kubernetes schemas
                assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, doc
                assert doc["kind"] == CUSTOM_RESOURCES[doc["apiVersion"]]
                continue
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

    sandbox = objects[("StatefulSet", "smithers-sandbox-worker")]["spec"]["template"]["spec"]
    assert sandbox["nodeSelector"] == {"smithers.dev/pool": "sandbox"}
    assert sandbox["tolerations"][0]["key"] == "smithers.dev/sandbox"
    assert sandbox["volumes"][-1]["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert _container(objects[("StatefulSet", "smithers-sandbox-worker")], "sandbox-worker")["args"][:3] == [
        "worker",
        "--queues",
        "sandbox",
    ]
    worker = objects[("Deployment", "smithers-worker")]
    assert worker["spec"]["replicas"] == 2
    assert _container(worker, "worker")["resources"]["requests"]["cpu"]  # autoscaling needs requests

    for kind, name in objects:
        if kind not in ("Deployment", "Job", "StatefulSet"):
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
    for name in ("gateway", "scheduler", "worker"):
        pod = objects[("Deployment", f"smithers-{name}")]["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["args"] == ["migrate"], name
    sandbox = _container(objects[("StatefulSet", "smithers-sandbox-worker")], "sandbox-worker")
    assert {"name": "DOCKER_HOST", "value": "tcp://sandbox-engine.sandbox.svc:2376"} in sandbox["env"]
    secret = objects[("Secret", "smithers-secrets")]
    assert set(secret["stringData"]) == {"database-url", "redis-url", "jwt-secret", "flower-password"}
    sandbox_secret = objects[("Secret", "smithers-sandbox-secrets")]
    assert sandbox_secret["metadata"]["namespace"] == "smithers-sandbox"
    assert set(sandbox_secret["stringData"]) == {"database-url", "redis-url"}  # no JWT key, no Flower


def test_sandbox_workers_are_a_statefulset_of_their_own_namespace_account_and_secret() -> None:
    objects = _objects({})
    sts = objects[("StatefulSet", "smithers-sandbox-worker")]
    assert ("Deployment", "smithers-sandbox-worker") not in objects
    assert sts["metadata"]["namespace"] == "smithers-sandbox"
    assert objects[("Namespace", "smithers-sandbox")]
    assert sts["spec"]["serviceName"] == "smithers-sandbox-worker"
    assert objects[("Service", "smithers-sandbox-worker")]["spec"]["clusterIP"] == "None"
    pod = sts["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "smithers-sandbox-worker" != _service_account(objects)
    container = _container(sts, "sandbox-worker")
    assert container["args"][-2:] == ["--name", "$(POD_NAME)"]  # stable: smithers-sandbox-worker-0
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"smithers-sandbox"}
    assert container["envFrom"] == [{"configMapRef": {"name": "smithers-sandbox-worker-config"}}]
    for kind in ("ServiceAccount", "ConfigMap", "Service", "PodDisruptionBudget"):
        name = "smithers-sandbox-worker" + ("-config" if kind == "ConfigMap" else "")
        assert objects[(kind, name)]["metadata"]["namespace"] == "smithers-sandbox", kind


def _service_account(objects: dict[tuple[str, str], dict[str, Any]]) -> str:
    return str(objects[("Deployment", "smithers-worker")]["spec"]["template"]["spec"]["serviceAccountName"])


def test_every_process_has_a_probe_and_a_disruption_budget() -> None:
    objects = _objects({})
    for kind, name, container in (
        ("Deployment", "smithers-gateway", "gateway"),
        ("Deployment", "smithers-scheduler", "scheduler"),
        ("Deployment", "smithers-worker", "worker"),
        ("StatefulSet", "smithers-sandbox-worker", "sandbox-worker"),
        ("Deployment", "smithers-flower", "flower"),
        ("Deployment", "smithers-metrics", "metrics"),
    ):
        probe = _container(objects[(kind, name)], container).get("livenessProbe")
        assert probe, name
    worker_probe = _container(objects[("Deployment", "smithers-worker")], "worker")["livenessProbe"]
    assert "inspect ping" in worker_probe["exec"]["command"][-1]
    sandbox_probe = _container(objects[("StatefulSet", "smithers-sandbox-worker")], "sandbox-worker")
    assert '"$POD_NAME@$HOSTNAME"' in sandbox_probe["livenessProbe"]["exec"]["command"][-1]
    for name in ("gateway", "scheduler", "worker", "sandbox-worker"):
        pdb = objects[("PodDisruptionBudget", f"smithers-{name}")]
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == name


def test_options_network_policy_keda_and_service_monitor() -> None:
    objects = _objects(_values("options-values.yaml"))
    policy = objects[("NetworkPolicy", "smithers-sandbox-worker")]
    assert policy["metadata"]["namespace"] == "smithers-untrusted"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["ingress"] == []
    egress = policy["spec"]["egress"]
    assert [rule["ports"][0]["port"] for rule in egress] == [53, 5432, 6379]  # DNS, store, broker only
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.0.12.0/24"}}]
    assert ("Namespace", "smithers-untrusted") not in objects
    assert objects[("StatefulSet", "smithers-sandbox-worker")]["spec"]["replicas"] == 3
    scaled = objects[("ScaledObject", "smithers-worker")]
    assert scaled["spec"]["triggers"][0]["metadata"] == {
        "address": "redis.redis.svc:6379",
        "listName": "steps",
        "listLength": "10",
    }
    assert scaled["spec"]["maxReplicaCount"] == 30
    assert "replicas" not in objects[("Deployment", "smithers-worker")]["spec"]  # KEDA owns it
    assert ("HorizontalPodAutoscaler", "smithers-worker") not in objects
    monitor = objects[("ServiceMonitor", "smithers-metrics")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    service = objects[("Service", "smithers-metrics")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert ("NetworkPolicy", "smithers-sandbox-worker") not in _objects({})


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
        ({"worker": {"keda": {"enabled": True}}}, "worker.keda.redisAddress"),
        (
            {
                "worker": {
                    "keda": {"enabled": True, "redisAddress": "r:6379"},
                    "autoscaling": {"enabled": True},
                }
            },
            "choose one",
        ),
        # values.schema.json
        ({"workers": {"replicas": 2}}, "workers"),
        ({"worker": {"replicas": "two"}}, "replicas"),
        ({"sandboxWorker": {"namespace": "Not_A_Namespace"}}, "namespace"),
        ({"migrations": {"mode": "always"}}, "mode"),
        ({"metricsExporter": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ],
)
def test_inconsistent_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        _render(values)
