"""batchpredict.io/v1alpha1: the BatchPrediction resource."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from batchpredict.api.v1alpha1.base import (
    API_VERSION,
    CATEGORIES,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ApiModel,
)
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.api.v1alpha1.status import BatchPredictionStatus, Phase


class BatchPrediction(ApiModel):
    """A batch prediction run: a dataset scored by a Triton model as an Indexed Job."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = Field(default=KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: BatchPredictionSpec
    status: BatchPredictionStatus | None = None


__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "BatchPrediction",
    "BatchPredictionSpec",
    "BatchPredictionStatus",
    "Phase",
]
