"""`version`: the plugin's, the operator's and the CRD's versions; warns when they differ."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from batchpredict.api.v1alpha1 import VERSION
from batchpredict.console.kube import Kube

VERSION_LABEL = "app.kubernetes.io/version"


def plugin_version() -> str:
    try:
        return version("batchpredict")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Versions:
    plugin: str
    api: str  # the API version this plugin speaks
    operator: list[str]  # versions of the operator Deployments the user can see
    crd: list[str]  # API versions the cluster's CRD serves (empty: not installed or hidden)

    def warnings(self) -> list[str]:
        found = []
        if self.crd and self.api not in self.crd:
            served = ", ".join(self.crd)
            found.append(f"the cluster's CRD serves {served}, this plugin speaks {self.api}")
        if not self.crd:
            found.append("the BatchPrediction CRD is not installed or not readable")
        found += [
            f"operator {other} differs from plugin {self.plugin}"
            for other in self.operator
            if other != self.plugin
        ]
        return found


async def versions(kube: Kube) -> Versions:
    crd = await kube.crd()
    served = [
        v["name"] for v in ((crd or {}).get("spec") or {}).get("versions", []) if v.get("served")
    ]
    deployments = await kube.operator_deployments()
    operator = sorted(
        {
            str((d["metadata"].get("labels") or {}).get(VERSION_LABEL, "unknown"))
            for d in deployments
        }
    )
    return Versions(plugin_version(), VERSION, operator, served)
