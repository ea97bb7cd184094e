"""Kubernetes manifests: every kustomization renders with kubectl, every object validates strictly against the
Kubernetes schemas (kubernetes-validate, offline), and the custom resources (ServiceMonitor, KServe
InferenceService) that have no schema here are checked against the objects they refer to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import DEPLOY, require_tool, run

K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
# Plain manifests (not kustomize files, Helm values or strategic-merge patches).
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml")
                   if p.name not in {"kustomization.yaml", "adapter-rules.yaml", "hpa-queue-wait.yaml"})
VALIDATE_HINT = "pip install kubernetes-validate (deploy/ci-setup.sh)"
KUBECTL_HINT = "install kubectl to render the kustomizations"
# Kinds without a schema in kubernetes-validate: their own checks below.
CUSTOM_KINDS = {"ServiceMonitor", "InferenceService"}
K8S_VERSIONS = ["1.29.0", None]  # oldest supported here, and kubernetes-validate's newest


def render(folder: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", KUBECTL_HINT)
    proc = run([kubectl, "kustomize", str(folder)])
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def kubernetes_validate(path: Path, version: str | None) -> str:
    binary = require_tool("kubernetes-validate", VALIDATE_HINT)
    cmd = [binary, "--strict", *(["-k", version] if version else []), str(path)]
    proc = run(cmd, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{path}:\n{output}"
    return output


def test_layout() -> None:
    names = {str(p.relative_to(K8S)) for p in KUSTOMIZATIONS}
    assert names == {".", "base", "hpa-queue-wait", "kserve"}, names


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomize_renders(folder: Path) -> None:
    kinds = {doc["kind"] for doc in render(folder)}
    assert kinds, folder


def test_default_render_has_every_object() -> None:
    objects = {(d["kind"], d["metadata"]["name"]) for d in render(K8S)}
    assert {("Namespace", "nnserve"), ("Deployment", "nnserve"), ("Service", "nnserve"),
            ("HorizontalPodAutoscaler", "nnserve"), ("PodDisruptionBudget", "nnserve"),
            ("ServiceMonitor", "nnserve")} <= objects, objects


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "latest")
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_rendered_objects_validate_strictly(folder: Path, version: str | None, tmp_path: Path) -> None:
    docs = render(folder)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    output = kubernetes_validate(rendered, version)
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        assert f"passed for resource {doc['kind'].lower()}/{doc['metadata']['name']}" in output, output


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_each_manifest_file_validates_strictly(path: Path) -> None:
    output = kubernetes_validate(path, None)
    kind = yaml.safe_load(path.read_text())["kind"]
    assert kind in CUSTOM_KINDS or "passed for resource" in output, output


def test_strict_validation_is_real(tmp_path: Path) -> None:
    """kubernetes-validate --strict refuses a misspelt field, so a pass above means something."""
    bad = tmp_path / "bad.yaml"
    text = (K8S / "base" / "deployment.yaml").read_text()
    bad.write_text(text.replace("periodSeconds: 5", "periodSecond: 5"))
    binary = require_tool("kubernetes-validate", VALIDATE_HINT)
    assert run([binary, "--strict", str(bad)], check=False).returncode != 0


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_deployment_probes_draining_and_security() -> None:
    objects = _by_kind(render(K8S))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    env = {e["name"]: e for e in container["env"]}
    drain_s = float(env["NNSERVE_DRAIN_TIMEOUT_S"]["value"])
    from service.hosting.http_protocol import DRAIN_IDLE_S

    assert pre_stop[0] == "sleep" and \
        int(pre_stop[1]) + drain_s + DRAIN_IDLE_S < pod["terminationGracePeriodSeconds"], \
        "preStop sleep + the server's drain (and an idle connection's grace) must fit in the grace period, or " \
        "the kubelet kills mid-drain"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert env["NNSERVE_PORT"]["value"] == str(container["ports"][0]["containerPort"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["NNSERVE_GRPC_PORT"]["value"] == str(ports["grpc"]) == "8001"
    # gRPC clients keep one connection, and the Service balances connections: old ones are asked to go
    assert Settings(grpc_max_connection_age_s=env["NNSERVE_GRPC_MAX_CONNECTION_AGE_S"]["value"]) \
        .grpc_max_connection_age_s > 0
    assert container["image"] == "nnserve:latest"


def test_service_hpa_pdb_and_servicemonitor_refer_to_the_deployment() -> None:
    objects = _by_kind(render(K8S))
    deployment, service = objects["Deployment"], objects["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names == {"http", "grpc"}
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["port"] == 8001 and grpc_port["appProtocol"] == "kubernetes.io/h2c"
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nnserve"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB must allow a voluntary eviction"
    monitor = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_queue_wait_hpa_uses_the_adapter_metric() -> None:
    hpa = _by_kind(render(K8S / "hpa-queue-wait"))["HorizontalPodAutoscaler"]
    pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods and pods[0]["metric"]["name"] == "nnserve_queue_wait_seconds_mean"
    rules = yaml.safe_load((K8S / "hpa-queue-wait" / "adapter-rules.yaml").read_text())
    assert [r["name"]["as"] for r in rules["rules"]["custom"]] == ["nnserve_queue_wait_seconds_mean"]


def test_inferenceservice_predictor_is_a_valid_pod(tmp_path: Path) -> None:
    """No InferenceService schema here: check KServe's required shape, and validate its predictor (a PodSpec
    with KServe's extra fields) strictly as a Pod."""
    isvc = _by_kind(render(K8S / "kserve"))["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = dict(isvc["spec"]["predictor"])
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container", "KServe routes to the container named kserve-container"
    assert container["image"] == "nnserve:latest"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NNSERVE_PORT"] == str(container["ports"][0]["containerPort"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["NNSERVE_GRPC_PORT"] == str(ports["h2c"]), "KServe names a gRPC port h2c"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    kserve_fields = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "containerConcurrency",
                     "timeout", "canaryTrafficPercent", "batcher", "logger"}
    pod_spec = {k: v for k, v in predictor.items() if k not in kserve_fields}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nnserve-predictor"}, "spec": pod_spec}
    path = tmp_path / "predictor-pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    assert "passed for resource pod/nnserve-predictor" in kubernetes_validate(path, None)


def _pod_specs() -> dict[str, dict[str, Any]]:
    deployment = _by_kind(render(K8S / "base"))["Deployment"]["spec"]["template"]["spec"]
    predictor = _by_kind(render(K8S / "kserve"))["InferenceService"]["spec"]["predictor"]
    return {"deployment": deployment, "kserve": predictor}


@pytest.mark.parametrize("which", ["deployment", "kserve"])
def test_a_read_only_root_leaves_tmp_writable_and_the_threads_to_nnserve(which: str) -> None:
    """The default server runs a process per CPU, which share their metrics and the repository API's orders
    through a folder under /tmp: a read-only root filesystem needs a writable /tmp. A fixed
    NNSERVE_INTRA_OP_THREADS would give each of those processes that many threads."""
    spec = _pod_specs()[which]
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "no writable /tmp"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "NNSERVE_INTRA_OP_THREADS" not in {e["name"] for e in container["env"]}
