"""Shared pieces of the v1alpha1 models: camelCase aliases, frozen models, schema hints."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "batchpredict.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BatchPrediction"
PLURAL = "batchpredictions"
SINGULAR = "batchprediction"
SHORT_NAMES = ["bp"]
CATEGORIES = ["batchpredict"]

# A Kubernetes object name (RFC 1123 subdomain) and a DNS-1123 label.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ApiModel(BaseModel):
    """Base of every spec model: immutable, camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON-ready form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status models tolerate fields written by newer operators (forward compatibility)."""

    model_config = ConfigDict(extra="ignore")


def cel(rule: str, message: str) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry for the generated CRD."""
    return {"rule": rule, "message": message}


def schema_extra(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """json_schema_extra carrying CEL rules and other Kubernetes schema extensions."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


# Opaque Kubernetes objects (affinity, valueFrom, probes) are kept as-is by the API server.
PRESERVE_UNKNOWN: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
# Resource quantities ("500m", 2, "4Gi") are int-or-string in Kubernetes.
INT_OR_STRING: dict[str, Any] = {"x-kubernetes-int-or-string": True}
Quantity = Annotated[int | str, Field(json_schema_extra=INT_OR_STRING)]
OpaqueObject = Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE_UNKNOWN)]
