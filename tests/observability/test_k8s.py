"""deploy/k8s/ validated offline: the rendered base and overlays against Kubernetes' schemas (kubernetes-validate),
the custom resources against the vendored CRDs' openAPIV3Schema (check-jsonschema), the KafkaTopics against the
topic catalog, the RayService's Serve config against Ray Serve's schema and our application builder, and the
manifests' own rules (secrets referenced, probes, resources, metrics scraped). No cluster runs here.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kubernetes_validate  # type: ignore[import-untyped]  # the package ships no type information
import pytest
import yaml

from schemas.topics import TOPICS, dispatch_topic
from services.cli.main import cli
from services.core import metrics
from services.core.settings import Settings
from services.inference.spec import DeploymentSpec, resolve_spec_path
from services.k8s.topics import kafka_topics_yaml, resource_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRDS = K8S / "crds"
KUSTOMIZATIONS = ["base", "overlays/gpu"]
KUBERNETES_VERSION = "1.33.0"
CORE_GROUPS = {"", "apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"}
EXTERNAL_SECRETS = {"llmops-clickhouse", "llmops-notifier-webhooks"}
"""Secrets the cluster's operator creates (deploy/k8s/README.md says how); the manifests only reference them."""

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")


def _render(kustomization: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / kustomization)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return _render(request.param)


def _group(doc: dict[str, Any]) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def _crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema of every served version of every vendored CRD."""
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])
                    found[key] = version["schema"]["openAPIV3Schema"]
    return found


def _strict(schema: Any) -> Any:
    """The schema with unknown fields rejected where Kubernetes would prune them (structural schemas)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _check_jsonschema(schema: dict[str, Any], instances: list[dict[str, Any]], tmp: Path) -> subprocess.CompletedProcess[str]:
    schema_file = tmp / "schema.json"
    schema_file.write_text(json.dumps(schema))
    files = []
    for i, doc in enumerate(instances):
        f = tmp / f"instance-{i}.json"
        f.write_text(json.dumps(doc))
        files.append(str(f))
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(exe), "--schemafile", str(schema_file), *files], capture_output=True, text=True)


def _containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container spec anywhere in a resource (pod templates of Deployments, Jobs, RayService groups, ...)."""
    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    yield from (c for c in value if isinstance(c, dict) and "image" in c)
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    return walk(doc)


def _find(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)


# --- schemas ---------------------------------------------------------------------------------------------------------


@needs_kubectl
def test_core_resources_are_valid_kubernetes(rendered: list[dict[str, Any]]) -> None:
    core = [d for d in rendered if _group(d) in CORE_GROUPS]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Deployment", "Service", "Job"}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@needs_kubectl
def test_custom_resources_match_the_vendored_crds(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    schemas = _crd_schemas()
    custom = [d for d in rendered if _group(d) not in CORE_GROUPS]
    kinds = {d["kind"] for d in custom}
    assert kinds == {
        "Kafka", "KafkaNodePool", "KafkaTopic", "ClickHouseInstallation", "RayService", "ServiceMonitor", "PodMonitor",
    }
    # One schema that applies each kind's CRD schema to the documents of that kind: one check-jsonschema run.
    branches = []
    for doc in custom:
        group, version = doc["apiVersion"].split("/")
        assert (group, version, doc["kind"]) in schemas, f"no vendored CRD serves {group}/{version} {doc['kind']}"
    present = {(*d["apiVersion"].split("/"), d["kind"]) for d in custom}
    for (group, version, kind), schema in schemas.items():
        if (group, version, kind) not in present:
            continue
        branches.append({
            "if": {"properties": {"apiVersion": {"const": f"{group}/{version}"}, "kind": {"const": kind}}},
            "then": _strict(schema),
        })
    result = _check_jsonschema({"allOf": branches}, custom, tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_the_crd_check_rejects_a_mistake(tmp_path: Path) -> None:
    """The check has teeth: a misspelt field and a wrong type are both reported by check-jsonschema."""
    schema = _strict(_crd_schemas()[("kafka.strimzi.io", "v1", "KafkaTopic")])
    topic = next(d for d in yaml.safe_load_all(kafka_topics_yaml()) if d)
    assert _check_jsonschema(schema, [topic], tmp_path).returncode == 0
    misspelt = copy.deepcopy(topic)
    misspelt["spec"]["partitionz"] = misspelt["spec"].pop("partitions")
    wrong_type = copy.deepcopy(topic)
    wrong_type["spec"]["partitions"] = "six"
    for bad in (misspelt, wrong_type):
        result = _check_jsonschema(schema, [bad], tmp_path)
        assert result.returncode == 1 and "instance-0.json" in result.stdout, result.stdout


def test_vendored_crds_are_the_released_files() -> None:
    """Each vendored file is listed in crds/SOURCES.md with its release tag and the sha256 it had when copied."""
    import hashlib

    sources = (CRDS / "SOURCES.md").read_text()
    files = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert len(files) == 7
    for name in files:
        row = next(line for line in sources.splitlines() if line.startswith(f"| `{name}` |"))
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() in row, name


# --- topics ----------------------------------------------------------------------------------------------------------


def _generated_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("topics.yaml") if "crds" not in p.parts)


def test_committed_topics_are_the_commands_output() -> None:
    """Each topics.yaml is exactly what the command in its header prints today (so it cannot drift from the catalog)."""
    from click.testing import CliRunner

    assert [p.relative_to(K8S).as_posix() for p in _generated_files()] == ["base/topics.yaml", "overlays/gpu/topics.yaml"]
    for path in _generated_files():
        text = path.read_text()
        header = re.match(r"# Generated by `llmops (k8s topics[^`]*)`", text)
        assert header, path
        result = CliRunner().invoke(cli, shlex.split(header.group(1)), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert result.output == text, f"{path} is stale: regenerate it with `llmops {header.group(1)} -o {path}`"


def test_kafka_topics_equal_the_catalog() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "base" / "topics.yaml").read_text()) if d]
    by_name = {d["spec"]["topicName"]: d for d in docs}
    dispatch = {n for n in by_name if n.startswith("llm.dispatch.")}
    assert set(by_name) - dispatch == set(TOPICS)
    for name, doc in by_name.items():
        spec = TOPICS[name] if name in TOPICS else dispatch_topic(name.removeprefix("llm.dispatch."))
        assert doc["kind"] == "KafkaTopic" and doc["metadata"]["labels"]["strimzi.io/cluster"] == "llmops"
        assert doc["metadata"]["name"] == resource_name(name)
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["config"] == spec.config()
    # A compacted topic carries no retention; a deleted one its retention.
    assert by_name["llm.rollouts"]["spec"]["config"] == {"cleanup.policy": "compact"}
    assert by_name["llm.requests"]["spec"]["config"]["retention.ms"] == str(TOPICS["llm.requests"].retention_ms)


def test_resource_names_of_topics_are_valid_and_distinct() -> None:
    assert resource_name("llm.requests") == "llm.requests"
    odd = [resource_name(n) for n in ("llm.dispatch.Chat_V1", "llm.dispatch.chat-v1", "llm.dispatch.chat_v1")]
    assert odd[1] == "llm.dispatch.chat-v1" and len(set(odd)) == 3
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", n) and len(n) <= 253 for n in odd)


# --- the RayService ----------------------------------------------------------------------------------------------------


@needs_kubectl
def test_serve_config_builds_our_application(rendered: list[dict[str, Any]]) -> None:
    """serveConfigV2 is a valid Serve config whose applications build with our builder; each has a dispatch topic."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from services.inference import serve_app

    (rayservice,) = [d for d in rendered if d["kind"] == "RayService"]
    config = ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))
    topics = {d["spec"]["topicName"] for d in rendered if d["kind"] == "KafkaTopic"}
    served = set()
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        assert module == "services.inference.serve_app"
        built = call_user_app_builder_with_args_if_necessary(getattr(serve_app, attr), app.args)
        spec = DeploymentSpec.from_yaml(resolve_spec_path(app.args["spec"]))
        assert app.name == serve_app.app_name(spec) and app.route_prefix is None
        assert built._bound_deployment.name == spec.deployment_id
        assert spec.dispatch_topic in topics
        served.add(spec.deployment_id)
    (router,) = [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmops-router"]
    command = router["spec"]["template"]["spec"]["containers"][0]["command"]
    routes = [command[i + 1] for i, arg in enumerate(command) if arg == "--route"]
    assert routes and {r.partition("=")[2] for r in routes} <= served, "the router routes to a served deployment"
    ray_version = rayservice["spec"]["rayClusterConfig"]["rayVersion"]
    import ray

    assert ray_version == ray.__version__


@needs_kubectl
def test_gpu_overlay_requests_gpus() -> None:
    docs = _render("overlays/gpu")
    (rayservice,) = [d for d in docs if d["kind"] == "RayService"]
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("llmops-stream-gpu:")
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert app["args"] == {"spec": "llama-1b-gpu", "device": "cuda"}
    base = _render("base")
    assert "nvidia.com/gpu" not in json.dumps(base), "the base asks for no GPU"


# --- the manifests' own rules --------------------------------------------------------------------------------------------


def _leaf_command(args: list[str]) -> click.Command:
    """The llmops (sub)command that ``args`` run; unknown commands or options fail the test."""
    command: click.Command = cli
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"{args}: a group needs a subcommand"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"{args}: no command {name!r}"
        command = sub
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in rest:
        if arg.startswith("-"):
            assert arg.split("=")[0] in known, f"{args}: {command.name} has no option {arg}"
    return command


@needs_kubectl
def test_services_are_operable(rendered: list[dict[str, Any]]) -> None:
    """Each Deployment runs a real llmops command with probes, resources, a SIGTERM grace and scraped metrics."""
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    assert set(deployments) >= {"llmops-streams", "llmops-router", "llmops-judge", "llmops-notifier", "llmops-gateway"}
    services = [d for d in rendered if d["kind"] == "Service"]
    (monitor,) = [d for d in rendered if d["kind"] == "ServiceMonitor"]
    monitored = monitor["spec"]["selector"]["matchLabels"]
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"][0] == "llmops"
        _leaf_command(container["command"][1:])
        ports = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
        assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "metrics", "containerPort": 9400} in container["ports"]
        scraped = [
            s for s in services
            if monitored.items() <= s["metadata"]["labels"].items()
            and s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
            and any(p["name"] == "metrics" for p in s["spec"]["ports"])
        ]
        assert scraped, f"{name}: no Service selected by the ServiceMonitor exposes its metrics"
    (job,) = [d for d in rendered if d["kind"] == "Job"]
    _leaf_command(job["spec"]["template"]["spec"]["containers"][0]["command"][1:])


@needs_kubectl
def test_secrets_are_referenced_never_inlined(rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["kind"] == "Secret"]
    configmaps = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ConfigMap"}
    for doc in rendered:
        for container in _containers(doc):
            for env in container.get("env", []):
                if re.search(r"URL|PASSWORD|SECRET|TOKEN|KEY", env["name"]):
                    assert "value" not in env, f"{doc['metadata']['name']}: {env['name']} is inlined"
                    assert env["valueFrom"]["secretKeyRef"]["name"] in EXTERNAL_SECRETS
        # Every ConfigMap a pod template uses is one the kustomization generates (with its hashed name).
        for ref in _find(doc, "configMapRef"):
            assert ref["name"] in configmaps, f"{doc['kind']} {doc['metadata']['name']}: no ConfigMap {ref['name']}"
        for ref in _find(doc, "secretKeyRef"):
            assert ref["name"] in EXTERNAL_SECRETS
    (chi,) = [d for d in rendered if d["kind"] == "ClickHouseInstallation"]
    users = chi["spec"]["configuration"]["users"]
    assert users["llmops/password"]["valueFrom"]["secretKeyRef"]["name"] == "llmops-clickhouse"
    for cm in configmaps.values():
        for key, value in cm["data"].items():
            assert not re.search(r"(?i)password|secret\s*:", f"{key}={value}".split("#")[0]) or "secret_env" in value, key
    readme = (K8S / "README.md").read_text()
    for secret in EXTERNAL_SECRETS:
        assert f"create secret generic {secret}" in readme


def test_settings_and_configs_are_valid() -> None:
    """The ConfigMap's variables are Settings fields, and the notifier's config loads."""
    from services.notifier.config import load_notifier_config

    env = dict(line.split("=", 1) for line in (K8S / "base" / "settings.env").read_text().splitlines() if line.strip())
    fields = {f"LLMOPS_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings.model_validate({k.removeprefix("LLMOPS_").lower(): v for k, v in env.items()})
    assert settings.metrics_port == 9400 and settings.metrics_host == "0.0.0.0"
    assert load_notifier_config(K8S / "base" / "notifier-config.yaml").console
    from services.gateway.config import GatewayConfig

    gateway = GatewayConfig.load(K8S / "base" / "gateway-config.yaml")
    assert gateway.host == "0.0.0.0" and "chat-small" in gateway.models


def _prometheus_rename(rules: list[dict[str, Any]], name: str) -> str:
    """Apply Prometheus 'replace' relabel rules on __name__ (regexes are anchored, $1 is the first group)."""
    for rule in rules:
        if rule.get("action", "replace") != "replace" or rule.get("sourceLabels", rule.get("source_labels")) != ["__name__"]:
            continue
        match = re.fullmatch(rule["regex"], name)
        if match:
            target = rule.get("targetLabel", rule.get("target_label"))
            assert target == "__name__"
            name = match.expand(re.sub(r"\$(\d+)", r"\\\1", rule["replacement"]))
    return name


def test_ray_metrics_are_renamed_to_the_catalog_names() -> None:
    monitoring = [d for d in yaml.safe_load_all((K8S / "base" / "monitoring.yaml").read_text()) if d]
    (pod_monitor,) = [d for d in monitoring if d["kind"] == "PodMonitor"]
    rules = pod_monitor["spec"]["podMetricsEndpoints"][0]["metricRelabelings"]
    for spec in metrics.SERVER_SPECS:
        assert _prometheus_rename(rules, metrics.ray_exported_name(spec)) == spec.exposed_name
    assert _prometheus_rename(rules, "ray_serve_num_http_requests_total") == "ray_serve_num_http_requests_total"
