"""What a container of a pod sees: its environment variables and its volumes as local directories.

Paths: the node agent gives each container a root directory (`BATCHPREDICT_CONTAINER_ROOT`) in
which every volumeMount's mountPath is a symlink to the volume's local directory, so a program
finds pod path `/p` at `$BATCHPREDICT_CONTAINER_ROOT/p` (the service-account token at
`.../var/run/secrets/kubernetes.io/serviceaccount/token`, the termination message file at
`.../dev/termination-log`). hostPath volumes are the host path itself, so mounting one at its own
path makes that path work unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.harness.kubeclient import ApiError, KubeClient

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class PodConfigError(RuntimeError):
    """The pod refers to something missing (a ConfigMap key, a Secret): container cannot start."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables replaced, `$$` escapes a `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def _field_path(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    annotated = re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", path)
    if annotated:
        return str(meta.get(annotated.group(1), {}).get(annotated.group(2), ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path not in simple:
        raise PodConfigError("CreateContainerConfigError", f"unsupported fieldRef {path!r}")
    return str(simple.get(path) or status.get(path.split(".", 1)[1], ""))


class ObjectCache:
    """ConfigMaps and Secrets of one pod's namespace, read once per container start."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self._client, self._ns = client, namespace
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    async def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        if (kind, name) not in self._cache:
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            try:
                obj = await self._client.get(f"/api/v1/namespaces/{self._ns}/{plural}/{name}")
            except ApiError as err:
                if err.status != 404:
                    raise
                self._cache[kind, name] = None
            else:
                if kind == "Secret":
                    raw = obj.get("data") or {}
                    values = {k: base64.b64decode(v).decode() for k, v in raw.items()}
                else:
                    values = dict(obj.get("data") or {})
                self._cache[kind, name] = values
        found = self._cache[kind, name]
        if found is None and not optional:
            raise PodConfigError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found')
        return found

    async def key(self, kind: str, ref: dict[str, Any]) -> str | None:
        optional = bool(ref.get("optional"))
        data = await self.data(kind, ref["name"], optional)
        if data is None or ref["key"] not in data:
            if optional:
                return None
            raise PodConfigError(
                "CreateContainerConfigError",
                f"couldn't find key {ref['key']} in {kind} {self._ns}/{ref['name']}",
            )
        return data[ref["key"]]


async def container_env(
    pod: dict[str, Any], container: dict[str, Any], base: Mapping[str, str], objects: ObjectCache
) -> dict[str, str]:
    """The container's environment: `base`, then envFrom, then env, in Kubernetes order."""
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]
                data = await objects.data(kind, ref["name"], bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[name] = _field_path(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = _resource_field(container, source["resourceFieldRef"])
        else:
            kind, key = (
                ("ConfigMap", "configMapKeyRef")
                if "configMapKeyRef" in source
                else ("Secret", "secretKeyRef")
            )
            value = await objects.key(kind, source[key])
            if value is not None:
                env[name] = value
    return env


def _resource_field(container: dict[str, Any], ref: dict[str, Any]) -> str:
    kind, _, resource = ref["resource"].partition(".")
    value = (container.get("resources") or {}).get(kind, {}).get(resource)
    # Without a limit the kubelet reports node allocatable; "0" is a sane stand-in here.
    return str(value) if value is not None else "0"


async def materialize_volume(
    volume: dict[str, Any],
    directory: Path,
    pod: dict[str, Any],
    objects: ObjectCache,
    request_token: Any,
) -> Path:
    """Create volume `volume` of `pod` as a local directory (hostPath: the path itself)."""
    if "hostPath" in volume:
        path = Path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        return path
    files: dict[str, str] = {}
    if "configMap" in volume or "secret" in volume:
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        ref = volume["configMap"] if kind == "ConfigMap" else volume["secret"]
        name = ref.get("name") or ref.get("secretName")
        files |= _items(await objects.data(kind, name, bool(ref.get("optional"))), ref)
    elif "downwardAPI" in volume:
        files |= _downward(pod, volume["downwardAPI"])
    elif "projected" in volume:
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                files[spec["path"]] = await request_token(
                    spec.get("audience"), spec.get("expirationSeconds", 3600)
                )
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                ref = source["configMap"] if kind == "ConfigMap" else source["secret"]
                files |= _items(
                    await objects.data(kind, ref["name"], bool(ref.get("optional"))), ref
                )
            elif "downwardAPI" in source:
                files |= _downward(pod, source["downwardAPI"])
    elif "emptyDir" not in volume:
        raise PodConfigError(
            "FailedMount",
            f"volume {volume['name']!r}: only emptyDir, hostPath, configMap, "
            "secret, downwardAPI and projected volumes are supported by the test node agent",
        )
    await asyncio.to_thread(_write_files, directory, files)
    return directory


def _write_files(directory: Path, files: Mapping[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def _items(data: dict[str, str] | None, ref: dict[str, Any]) -> dict[str, str]:
    if data is None:
        return {}
    if ref.get("items"):
        return {item["path"]: data[item["key"]] for item in ref["items"] if item["key"] in data}
    return dict(data)


def _downward(pod: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
    return {
        item["path"]: _field_path(pod, item["fieldRef"]["fieldPath"])
        for item in spec.get("items") or []
        if "fieldRef" in item
    }


def link_mounts(root: Path, container: dict[str, Any], volumes: Mapping[str, Path]) -> None:
    """Make `root/<mountPath>` a symlink to each mounted volume (honouring subPath)."""
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        link = root / mount["mountPath"].lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
