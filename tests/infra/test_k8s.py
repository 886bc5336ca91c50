"""The Kubernetes manifests: schema-valid, locked down, wired to real configs and commands.

Every manifest is validated offline by kubernetes-validate against the API schema of
K8S_VERSION (strict: an unknown or misspelt field fails). Then every pod and container is held
to the security rules, the Secrets are checked to arrive as files (never environment), the
config files the Secrets carry are parsed by the signer's and the engine's own loaders, the
commands by the signer's own CLI parser, and the NetworkPolicies are evaluated (tests/infra/
netpol.py) for who may talk to whom.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from botengine.engine_config import load_engine_config
from signer.cli import build_parser
from signer.config import parse_config
from tests.infra.netpol import Address, Pod, connection_allowed
from tests.infra.test_containers import SECRET_NAME
from tests.infra.units import INFRA

K8S = INFRA / "k8s"
K8S_VERSION = "1.30.0"
NAMESPACE = "bulkhead"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
DEFAULT = [p for p in MANIFESTS if "optional" not in p.parts]


def docs(paths: list[Path]) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs(DEFAULT) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs(MANIFESTS):
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def mount_of(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume that serves `path` in `container` (the deepest mount above it)."""
    p = PurePosixPath(path)
    mounts = [m for m in container.get("volumeMounts", []) if p.is_relative_to(m["mountPath"])]
    assert mounts, f"{container['name']}: nothing is mounted at {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return {**volume, "readOnly": mount.get("readOnly", False)}


def secret_file(spec: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """Assert `path` is a file from a Secret volume, read-only; return the Secret's name."""
    volume = mount_of(spec, container, path)
    assert "secret" in volume and volume["readOnly"], f"{path} is not a read-only Secret file"
    return volume["secret"]["secretName"]


def workload(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = find("Deployment", name)
    spec = deployment["spec"]["template"]["spec"]
    return deployment, spec, spec["containers"][0]


def config_example(name: str) -> Path:
    return K8S / "config" / name


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_against_the_kubernetes_api_schema(path: Path) -> None:
    resources = docs([path])
    assert resources
    for doc in resources:
        version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert version == "1.30"
        assert (
            doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or doc["kind"] == "Namespace"
        )


def test_strict_validation_catches_a_misspelt_security_field() -> None:
    """The schema check has teeth: a typo that Kubernetes would silently drop is an error."""
    deployment = find("Deployment", "bulkhead-signer")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- pod security ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,spec", pod_specs(), ids=[n for n, _ in pod_specs()])
def test_every_pod_and_container_is_locked_down(name: str, spec: dict[str, Any]) -> None:
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for c in containers(spec):
        ctx = c["securityContext"]
        assert ctx["runAsNonRoot"] is True, c["name"]
        assert ctx.get("runAsUser", pod["runAsUser"]) > 0, c["name"]
        assert ctx["allowPrivilegeEscalation"] is False, c["name"]
        assert ctx["readOnlyRootFilesystem"] is True, c["name"]
        assert ctx.get("privileged", False) is False, c["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert ctx.get("seccompProfile", pod["seccompProfile"])["type"] == "RuntimeDefault"
        assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
        assert "limits" in c.get("resources", {}), c["name"]


@pytest.mark.parametrize("name,spec", pod_specs(), ids=[n for n, _ in pod_specs()])
def test_no_secret_reaches_a_container_through_its_environment(
    name: str, spec: dict[str, Any]
) -> None:
    for c in containers(spec):
        for env in c.get("env", []):
            assert "valueFrom" not in env, (c["name"], env["name"])  # literal settings only
            assert not SECRET_NAME.search(env["name"]), (c["name"], env["name"])
        assert not [e for e in c.get("envFrom", []) if "secretRef" in e], c["name"]
    for volume in spec["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o400, volume["name"]


def test_the_signer_reads_the_master_key_from_a_secret_file_never_from_the_data_dir() -> None:
    _, spec, signer = workload("bulkhead-signer")
    args = build_parser().parse_args(signer["args"])
    assert args.cmd == "serve" and not args.insecure_dev
    served = mount_of(spec, signer, args.master_key_file)
    data = mount_of(spec, signer, args.data_dir)
    assert served["name"] != data["name"]  # the key never sits beside the keystore
    if "secret" in served:  # mounted straight from the Secret
        assert served["secret"]["secretName"] == "bulkhead-signer-master-key"
        return
    # Otherwise copied from the Secret, by the init step, into memory only this pod sees.
    assert served["emptyDir"]["medium"] == "Memory" and served["readOnly"], served
    (prepare,) = spec["initContainers"]
    script = "\n".join(prepare["command"])
    copy = next(ln for ln in script.splitlines() if ln.strip().endswith(args.master_key_file))
    source = shlex.split(copy)[-2]
    assert "-m 0600" in copy  # the signer refuses a key file group or others can read
    assert secret_file(spec, prepare, source) == "bulkhead-signer-master-key"
    assert mount_of(spec, prepare, args.master_key_file)["name"] == served["name"]


def test_signer_config_comes_from_a_secret_and_points_at_mounted_tls_files() -> None:
    deployment, spec, signer = workload("bulkhead-signer")
    args = build_parser().parse_args(signer["args"])
    (prepare,) = spec["initContainers"]
    script = "\n".join(prepare["command"])
    copy = next(ln for ln in script.splitlines() if ln.strip().endswith("/signer.toml"))
    source, target = shlex.split(copy)[-2:]
    assert PurePosixPath(target) == PurePosixPath(args.data_dir) / "signer.toml"
    assert secret_file(spec, prepare, source) == "bulkhead-signer-config"  # holds the DB URL
    config = parse_config(config_example("signer.toml").read_text())
    assert config.tls is not None
    for path in (config.tls.cert, config.tls.key, config.tls.client_ca):
        assert secret_file(spec, signer, str(path)) == "bulkhead-signer-tls"
    assert not mount_of(spec, signer, args.data_dir)["readOnly"]
    # Replicas share state only through PostgreSQL.
    assert deployment["spec"]["replicas"] == 2
    assert config.database_url and config.database_url.startswith("postgresql")
    # The Service reaches the port the signer listens on.
    port = int(config.tcp.rpartition(":")[2]) if config.tcp else 0
    (container_port,) = signer["ports"]
    assert container_port["containerPort"] == port
    (svc_port,) = find("Service", "bulkhead-signer")["spec"]["ports"]
    assert svc_port["targetPort"] == container_port["name"] and svc_port["port"] == port


def test_engine_config_identity_and_tls_come_from_secrets_and_dial_the_signer_service() -> None:
    deployment, spec, engine = workload("bulkhead-engine")
    assert engine["args"][:2] == ["run", "--config"]
    assert secret_file(spec, engine, engine["args"][2]) == "bulkhead-engine-config"
    cfg = load_engine_config(config_example("engine.toml"))
    assert cfg.signer is not None and cfg.signer.tls is not None
    assert secret_file(spec, engine, str(cfg.signer.identity_key)) == "bulkhead-engine-identity"
    for path in (cfg.signer.tls.ca, cfg.signer.tls.cert, cfg.signer.tls.key):
        assert secret_file(spec, engine, str(path)) == "bulkhead-engine-tls"
    assert not mount_of(spec, engine, str(cfg.data_dir))["readOnly"]
    svc = find("Service", "bulkhead-signer")
    expected = f"{svc['metadata']['name']}.{NAMESPACE}.svc:{svc['spec']['ports'][0]['port']}"
    assert cfg.signer.addresses == [expected]
    assert deployment["spec"]["replicas"] >= 2
    assert cfg.database_url and cfg.database_url.startswith("postgresql")  # leases need it


def test_config_examples_hold_no_real_secret() -> None:
    for name in ("signer.toml", "engine.toml"):
        raw = tomllib.loads(config_example(name).read_text())
        url = raw["database_url"]
        assert url.split("://", 1)[1].split("@")[0].endswith(":REPLACE_ME"), url


# --- network policy -------------------------------------------------------------------------

NS_LABELS = {"kubernetes.io/metadata.name": NAMESPACE}


def pod(name: str) -> Pod:
    return Pod(NAMESPACE, {"app.kubernetes.io/name": name}, NS_LABELS)


SIGNER, ENGINE = pod("bulkhead-signer"), pod("bulkhead-engine")
POSTGRES, OTHER = pod("postgresql"), pod("something-else")
DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})
# A pod in another namespace (no policies there, so its egress is open) wearing the engine's label.
IMPOSTOR = Pod("default", ENGINE.labels, {"kubernetes.io/metadata.name": "default"})
INTERNET, METADATA, PRIVATE = (
    Address("203.0.113.7"),
    Address("169.254.169.254"),
    Address("10.1.2.3"),
)


def policies(optional: bool = False) -> list[dict[str, Any]]:
    return [d for d in docs(MANIFESTS if optional else DEFAULT) if d["kind"] == "NetworkPolicy"]


def test_the_manifests_labels_are_the_ones_the_policies_are_evaluated_for() -> None:
    for name, p in (("bulkhead-signer", SIGNER), ("bulkhead-engine", ENGINE)):
        labels = find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= p.labels.items()


def test_default_deny_covers_every_pod_in_both_directions() -> None:
    deny = [p for p in policies() if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert sorted(deny[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    assert not connection_allowed(policies(), OTHER, SIGNER, 7443)
    assert not connection_allowed(policies(), OTHER, INTERNET, 443)


@pytest.mark.parametrize(
    "src,dst,port,allowed",
    [
        (ENGINE, SIGNER, 7443, True),
        (ENGINE, SIGNER, 22, False),
        (OTHER, SIGNER, 7443, False),
        (SIGNER, SIGNER, 7443, False),
        (POSTGRES, SIGNER, 7443, False),
        (IMPOSTOR, SIGNER, 7443, False),
        (INTERNET, SIGNER, 7443, False),
        (PRIVATE, SIGNER, 7443, False),
    ],
    ids=[
        "engine",
        "engine-other-port",
        "other-pod",
        "signer",
        "postgres",
        "engine-label-other-namespace",
        "internet",
        "lan",
    ],
)
def test_only_engine_pods_reach_the_signer(src: Any, dst: Pod, port: int, allowed: bool) -> None:
    assert connection_allowed(policies(), src, dst, port) is allowed


@pytest.mark.parametrize(
    "src,dst,port,protocol,allowed",
    [
        (SIGNER, INTERNET, 443, "TCP", True),
        (SIGNER, INTERNET, 80, "TCP", False),
        (SIGNER, METADATA, 443, "TCP", False),
        (SIGNER, PRIVATE, 443, "TCP", False),
        (SIGNER, DNS, 53, "UDP", True),
        (SIGNER, POSTGRES, 5432, "TCP", True),
        (SIGNER, ENGINE, 7443, "TCP", False),
        (ENGINE, INTERNET, 443, "TCP", False),
        (ENGINE, METADATA, 80, "TCP", False),
        (ENGINE, DNS, 53, "UDP", True),
        (ENGINE, DNS, 53, "TCP", True),
        (ENGINE, POSTGRES, 5432, "TCP", True),
        (ENGINE, OTHER, 443, "TCP", False),
        (OTHER, POSTGRES, 5432, "TCP", False),
    ],
)
def test_only_the_signer_reaches_the_internet_and_only_on_443(
    src: Pod, dst: Any, port: int, protocol: str, allowed: bool
) -> None:
    assert connection_allowed(policies(), src, dst, port, protocol) is allowed


def test_the_optional_market_data_policy_opens_https_for_the_engine_and_nothing_else() -> None:
    with_optional = policies(optional=True)
    assert len(with_optional) == len(policies()) + 1
    assert connection_allowed(with_optional, ENGINE, INTERNET, 443)
    assert not connection_allowed(with_optional, ENGINE, INTERNET, 80)
    assert not connection_allowed(with_optional, ENGINE, METADATA, 443)
    assert not connection_allowed(with_optional, OTHER, SIGNER, 7443)
