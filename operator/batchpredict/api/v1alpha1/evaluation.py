"""`spec.evaluation`: compare a run's predictions with labels (DESIGN.md section 10)."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import ApiModel, cel, schema_extra
from batchpredict.api.v1alpha1.data import InputFormat


class EvaluationTask(StrEnum):
    CLASSIFICATION = "classification"
    BINARY = "binary"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"


class LabelsDataset(ApiModel):
    """A dataset of labels joined with the predictions by item id."""

    uri: str = Field(
        min_length=1,
        description="Where the labels are: a path in the pod, `s3://`, `gs://`, `http(s)://`.",
    )
    format: InputFormat = Field(description="`jsonl`, `csv` or `parquet`.")
    id_field: str = Field(
        min_length=1, description="Field holding the item id (as in the predictions' `id`)."
    )


class LabelsSpec(ApiModel):
    field: str = Field(
        default="label",
        min_length=1,
        description="Field holding each item's label: in the predictions (an input field "
        "carried by output.includeFields, which the evaluation adds itself) or, with "
        "`dataset`, in the labels dataset.",
    )
    dataset: LabelsDataset | None = Field(
        default=None,
        description="A separate labels dataset joined by item id; the labels are a field of "
        "each item when left out.",
    )


class EvaluationSpec(ApiModel):
    """What to measure. Editing it on a finished run re-validates that run from its files."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "self.task != 'classification' || !has(self.threshold)",
                "evaluation.threshold applies to binary and multilabel tasks only",
            ),
        )
    }

    task: EvaluationTask = Field(
        description="`classification` (multi-class), `binary` (a score and a threshold), "
        "`multilabel` or `regression`."
    )
    prediction: str = Field(
        min_length=1,
        description="Prediction field to compare (an output field name): a class, a ranked "
        "list of classes (`topk`) or a score vector for classification; a score (or a "
        "vector whose last entry is the positive score) for binary; scores or a list of "
        "classes for multilabel; a number for regression.",
    )
    labels: LabelsSpec = Field(default=LabelsSpec(), description="Where the labels are.")
    threshold: float | None = Field(
        default=None,
        description="binary: scores at or above it are positive; multilabel: scores at or "
        "above it are predicted. Default 0.5.",
    )
    positive_label: str = Field(
        default="1",
        min_length=1,
        description="binary: the label value (as text) of the positive class; `true` and "
        "`True` also count as positive when it is `1`.",
    )
    class_names: list[str] | None = Field(
        default=None,
        description="Class names by index: a predicted index i stands for class_names[i] "
        "(labels may be names or indexes).",
    )
    top_k: list[int] = Field(
        default_factory=lambda: [5],
        description="classification: the k of top-k accuracy (when the prediction holds a "
        "ranked list or scores).",
    )
    slice_by: list[str] = Field(
        default_factory=list,
        description="Also measure per value of these fields (from the predictions' included "
        "fields or the labels dataset), e.g. site or scanner.",
    )

    @model_validator(mode="after")
    def _threshold_use(self) -> EvaluationSpec:
        if self.task is EvaluationTask.CLASSIFICATION and self.threshold is not None:
            raise ValueError("evaluation.threshold applies to binary and multilabel tasks only")
        return self

    @property
    def cutoff(self) -> float:
        return 0.5 if self.threshold is None else self.threshold

    def key(self) -> str:
        """A short hash of this spec: status.evaluation says which spec it measured, so an
        edited spec is seen and re-validated."""
        text = json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def carried_fields(self) -> list[str]:
        """Input fields the predictions must carry for this evaluation."""
        if self.labels.dataset is not None:
            return []  # the labels dataset holds the label (and may hold the slice fields)
        return [self.labels.field, *self.slice_by]
