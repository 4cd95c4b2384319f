"""deploy/ and docker-compose.yml: rules and their unit tests, Alertmanager config, Kubernetes manifests, compose.

promtool, amtool and docker-compose are Debian packages that scripts/setup-env installs: a missing tool
fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from keywatch.config import ENV_PREFIX, Settings, load_settings
from keywatch.core.config import load_detection_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Read by keywatch besides the Settings fields: the config file's path.
EXTRA_ENV = {"KEYWATCH_CONFIG"}


def tool(name: str, package: str) -> str:
    """The path of a command-line tool, or a failure naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} (scripts/setup-env does)")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def k8s_documents() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s (all files, secret example included)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def setting_env_names() -> set[str]:
    """Every environment variable keywatch reads."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | EXTRA_ENV


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts deploy/prometheus/rules.yml."""
    done = run(tool("promtool", "prometheus"), "check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules() -> None:
    """Every alerting rule fires (and stays quiet) as its `promtool test rules` unit tests say."""
    done = run(tool("promtool", "prometheus"), "test", "rules", "rules_test.yml", cwd=DEPLOY / "prometheus")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_rule_has_a_unit_test() -> None:
    """Each alert in rules.yml appears in rules_test.yml with at least one case where it fires."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    assert {"KeywatchWorkerDown", "KeywatchFallingBehind", "KeywatchDeadLettersGrowing", "KeywatchNoInput"} <= alerts
    assert {"KeywatchRecoveryStuck", "KeywatchNotReady", "KeywatchHighSeverityAlerts", "KeywatchNewIpSurge"} <= alerts
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())
    fired = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == fired
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
                assert rule["labels"]["component"] in ("keywatch", "keywatch-security"), rule["alert"]


def test_prometheus_config_is_valid() -> None:
    """`promtool check config` accepts the scrape configuration (rules path rewritten to the repository)."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["scrape_configs"][0]["job_name"] == "keywatch"
    # --syntax-only does not open rule files, whose path only exists inside the container.
    done = run(
        tool("promtool", "prometheus"),
        "check",
        "config",
        "--syntax-only",
        str(DEPLOY / "prometheus" / "prometheus.yml"),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts the example Alertmanager configuration."""
    done = run(
        tool("amtool", "prometheus-alertmanager"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=apiKey.usedAfterRevoke", "severity=critical", "tenant=acme"], "security-page"),
        (["alertname=apiKey.created", "severity=low", "tenant=acme"], "security-triage"),
        (["alertname=KeywatchNewIpSurge", "severity=high", "component=keywatch-security"], "security-page"),
        (["alertname=KeywatchWorkerDown", "severity=critical", "component=keywatch"], "keywatch-oncall"),
        (["alertname=KeywatchNoInput", "severity=warning", "component=keywatch"], "keywatch-ops"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    """keywatch's own alerts go to the security receivers, health alerts to the keywatch receivers."""
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    amtool = tool("amtool", "prometheus-alertmanager")
    done = run(amtool, "config", "routes", "test", f"--config.file={config}", f"--verify.receivers={receiver}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr


def test_k8s_manifests_have_the_expected_kinds() -> None:
    """deploy/k8s holds a StatefulSet, its metrics Service, ConfigMaps, a Secret example and a PDB."""
    kinds = sorted(doc["kind"] for doc in k8s_documents())
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Secret",
        ]
    )
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_statefulset_runs_rocksdb_workers_with_probes() -> None:
    """Workers keep RocksDB state on a volume claim, have probes on the HTTP endpoints, resources and config."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    sts = docs[("StatefulSet", "keywatch")]["spec"]
    env = docs[("ConfigMap", "keywatch-env")]["data"]
    (container,) = sts["template"]["spec"]["containers"]
    assert env["KEYWATCH_STORE"] == "rocksdb://"
    claims = {c["metadata"]["name"] for c in sts["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert "data" in claims
    assert mounts["data"] == env["KEYWATCH_DATA_DIR"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert str(port) == env["KEYWATCH_METRICS_PORT"]
    assert env["KEYWATCH_METRICS_HOST"] == "0.0.0.0"  # the pod's address, for the kubelet and Prometheus
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    service = docs[("Service", "keywatch")]
    assert service["spec"]["selector"].items() <= sts["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert sts["serviceName"] == service["metadata"]["name"]
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"keywatch-env", "keywatch-secrets"}
    assert mounts["config"] + "/config.toml" == env["KEYWATCH_CONFIG"]


def test_k8s_env_names_are_keywatch_settings() -> None:
    """Every KEYWATCH_* name in the ConfigMap, the Secret and the container env is a setting keywatch reads."""
    known = setting_env_names()
    used: set[str] = set()
    for doc in k8s_documents():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "keywatch-env":
            used |= set(doc["data"])
        elif doc["kind"] == "Secret":
            used |= set(doc.get("stringData", {})) | set(doc.get("data", {}))
        elif doc["kind"] == "StatefulSet":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                used |= {e["name"] for e in container.get("env", [])}
    assert used
    assert all(name.startswith(ENV_PREFIX) for name in used)
    assert sorted(used - known) == []


def test_k8s_settings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's environment, the Secret and config.toml together are a valid keywatch configuration."""
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    path = tmp_path / "config.toml"
    path.write_text(docs[("ConfigMap", "keywatch-config")]["data"]["config.toml"])
    env = {**docs[("ConfigMap", "keywatch-env")]["data"], **docs[("Secret", "keywatch-secrets")]["stringData"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEYWATCH_CONFIG", str(path))  # mounted at /etc/keywatch in the pod
    settings = load_settings()
    assert settings.store == "rocksdb://"
    assert settings.alert_source == "/keywatch/prod"
    assert settings.security_protocol == "SASL_SSL"
    assert settings.replication_factor == 3  # a production cluster: one broker may be lost
    detection = load_detection_config(path)
    assert detection.for_env("sandbox").rate.min_per_minute == 600


@pytest.mark.parametrize("version", [kubernetes_validate.latest_version(), "1.29.0"])
def test_k8s_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    """Every object in deploy/k8s is valid, unknown fields refused (strict), for the newest and an older API."""
    for doc in k8s_documents():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    """The validation above could fail: a typo in the StatefulSet is an error, not ignored."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    sts = docs[("StatefulSet", "keywatch")]
    broken = {**sts, "spec": {**sts["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_workers_run_without_a_service_account_token_behind_a_network_policy() -> None:
    """A ServiceAccount of their own with no token mounted, and a NetworkPolicy that admits only the metrics port."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    pod = docs[("StatefulSet", "keywatch")]["spec"]["template"]
    account = docs[("ServiceAccount", "keywatch")]
    assert account["automountServiceAccountToken"] is False
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    policy = docs[("NetworkPolicy", "keywatch")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (container,) = pod["spec"]["containers"]
    names = {p["name"] for p in container["ports"]}
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == ["metrics"]
    assert "metrics" in names
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (9092, "TCP"), (9093, "TCP")} <= egress


def test_prometheus_operator_overlay_scrapes_the_service_and_carries_the_rules() -> None:
    """The ServiceMonitor selects the metrics Service's port; the PrometheusRule holds deploy/prometheus/rules.yml."""
    overlay = K8S / "prometheus-operator"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (overlay / resource).exists(), resource
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    service = docs[("Service", "keywatch")]
    monitor = yaml.safe_load((overlay / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # the `up{job="keywatch"}` rules need the job label the operator derives from the Service's name
    assert service["metadata"]["name"] == "keywatch"
    assert "jobLabel" not in monitor["spec"]
    rule = yaml.safe_load((overlay / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    done = run(sys.executable, str(ROOT / "scripts" / "sync-prometheusrule"), "--check")
    assert done.returncode == 0, done.stderr


def test_compose_worker_posts_to_the_bundled_alertmanager_with_a_stable_redaction_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose worker's environment is a valid configuration that reaches the compose Alertmanager."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    env = dict(services["keywatch"]["environment"])
    url = env["KEYWATCH_ALERTMANAGER_URL"]
    assert url == "http://alertmanager:9093"
    assert "alertmanager" in services
    assert any(p.endswith(":9093") for p in services["alertmanager"]["ports"])
    key = env["KEYWATCH_REDACTION_KEY"]
    match = re.fullmatch(r"\$\{KEYWATCH_REDACTION_KEY:-([^}]+)\}", key)
    assert match, key  # overridable from the shell, with a demo default
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, match.group(1) if name == "KEYWATCH_REDACTION_KEY" else str(value))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.alertmanager_url == url
    assert settings.redaction_key is not None


def test_docker_compose_config_validates() -> None:
    """`docker-compose config` accepts docker-compose.yml, with Prometheus, Alertmanager, Grafana and the demo."""
    compose = tool("docker-compose", "docker-compose")
    done = run(compose, "-f", "docker-compose.yml", "config", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(compose, "-f", "docker-compose.yml", "--profile", "demo", "config", "--services")
    assert done.returncode == 0, done.stdout + done.stderr
    services = set(done.stdout.split())
    assert {"kafka", "keywatch", "prometheus", "alertmanager", "grafana", "simulator"} <= services


def test_compose_mounts_the_deploy_files() -> None:
    """Prometheus, Alertmanager and Grafana in compose read the files this repository checks."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    mounted = {v.split(":")[0] for s in ("prometheus", "alertmanager", "grafana") for v in services[s]["volumes"]}
    for path in (
        "./deploy/prometheus/prometheus.yml",
        "./deploy/prometheus/rules.yml",
        "./deploy/alertmanager/alertmanager.yml",
        "./grafana/dashboards",
        "./grafana/provisioning/datasources",
        "./grafana/provisioning/dashboards",
    ):
        assert path in mounted, path
        assert (ROOT / path).exists(), path
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["keywatch"]["environment"]["KEYWATCH_METRICS_HOST"] == "0.0.0.0"
