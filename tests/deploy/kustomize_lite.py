"""A pure-Python render of deploy/kubernetes for machines without kubectl (CI): the few Kustomize features the
base uses, nothing else (a feature it does not know fails loudly).

resources (files), configMapGenerator (files), secretGenerator (envs), images (newTag/newName), and the
generated objects' names with kustomize's content-hash suffix, put into every reference a pod template makes
(volumes, env, envFrom). Where kubectl is present, tests/deploy checks this render equals `kubectl kustomize`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "images"}


def render(base: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise NotImplementedError(f"kustomize_lite does not know {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        objects.extend(doc for doc in yaml.safe_load_all((base / resource).read_text()) if doc)
    renamed: dict[tuple[str, str], str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (base / f).read_text() for f in generator.get("files", [])}
        objects.append(_generated("ConfigMap", generator["name"], {"data": data}, renamed))
    for generator in kustomization.get("secretGenerator", []):
        data = {}
        for env_file in generator.get("envs", []):
            data.update(read_env_file(base / env_file))
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        objects.append(_generated("Secret", generator["name"], {"type": "Opaque", "data": encoded}, renamed))
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is not None:
            _rewrite_pod(pod, renamed, kustomization.get("images", []))
    return objects


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped (kustomize's env file format)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _generated(kind: str, name: str, body: dict[str, Any], renamed: dict[tuple[str, str], str]) -> dict[str, Any]:
    hashed = f"{name}-{content_hash(kind, body)}"
    renamed[(kind, name)] = hashed
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": hashed}, **body}


def content_hash(kind: str, body: dict[str, Any]) -> str:
    """kustomize's name suffix (api/hasher): sha256 over Go's JSON of a map of kind, name and the content (map
    keys sorted; <, >, & and the line/paragraph separators escaped), its first 10 hex digits with 0, 1, 3,
    a, e spelled g, h, k, m, t. The name in it is empty: the generated object's name is not found at hash
    time in the kustomize kubectl 1.32 embeds (the equality test with kubectl tells if that changes)."""
    fields = {"kind": kind, "name": "", "data": body["data"]}
    if kind == "Secret":
        fields["type"] = body["type"]
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(char, escape)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rewrite_pod(pod: dict[str, Any], renamed: dict[tuple[str, str], str], images: list[dict[str, Any]]) -> None:
    def config_map(name: str) -> str:
        return renamed.get(("ConfigMap", name), name)

    def secret(name: str) -> str:
        return renamed.get(("Secret", name), name)

    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = config_map(volume["configMap"]["name"])
        if "secret" in volume:
            volume["secret"]["secretName"] = secret(volume["secret"]["secretName"])
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                source["secretKeyRef"]["name"] = secret(source["secretKeyRef"]["name"])
            if "configMapKeyRef" in source:
                source["configMapKeyRef"]["name"] = config_map(source["configMapKeyRef"]["name"])
        for env_from in container.get("envFrom", []):
            if "secretRef" in env_from:
                env_from["secretRef"]["name"] = secret(env_from["secretRef"]["name"])
            if "configMapRef" in env_from:
                env_from["configMapRef"]["name"] = config_map(env_from["configMapRef"]["name"])
        for image in images:
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
