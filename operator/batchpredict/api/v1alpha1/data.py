"""What a run reads and where it writes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import (
    ApiModel,
    cel,
    schema_extra,
)
from batchpredict.api.v1alpha1.dicom import DicomInput


class InputFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    FILES = "files"
    DICOM = "dicom"


class Select(ApiModel):
    """Which part of the dataset to score."""

    glob: str | None = Field(
        default=None, description="For `files` and multi-file datasets: keep paths matching it."
    )
    columns: list[str] | None = Field(
        default=None, description="Read only these fields (Parquet/CSV column projection)."
    )
    where: dict[str, str] | None = Field(
        default=None,
        description="Keep items whose fields equal these values (compared as text).",
    )
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many items.")


class ImagePreprocess(ApiModel):
    resize: list[int] | None = Field(
        default=None, min_length=2, max_length=2, description="[height, width] to resize to."
    )
    mode: str = Field(
        default="RGB", pattern=r"^(RGB|L|RGBA)$", description="Pillow mode: RGB, L or RGBA."
    )
    scale: float = Field(default=1.0 / 255.0, description="Pixel values are multiplied by it.")
    mean: list[float] | None = Field(default=None, description="Per-channel mean subtracted.")
    std: list[float] | None = Field(default=None, description="Per-channel std divided by.")
    channels_first: bool = Field(default=False, description="CHW instead of HWC.")


class Preprocess(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!(has(self.image) && has(self.function))",
                "preprocess: set at most one of image and function",
            )
        )
    }

    image: ImagePreprocess | None = Field(
        default=None, description="Decode, resize and normalize images (built in)."
    )
    function: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="`module:function` importable in the worker image; called with each item "
        "(a dict) and returns the dict of fields for the input tensors.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Items preprocessed at once in each worker pod: threads that read files "
        "and decode images, or processes that run `function`. Default: the pod's CPU limit "
        "(its cgroup quota), else the cores it may run on.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Preprocess:
        if self.image is not None and self.function is not None:
            raise ValueError("preprocess: set at most one of image and function")
        return self


BYTE_RANGES_RULE = (
    "input.byteRanges: only for jsonl and csv, and not with select.limit (which needs the "
    "rows counted in order)"
)


class InputSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!has(self.dicom) || self.format == 'dicom'",
                "input.dicom: only with format: dicom",
            ),
            cel(
                "!has(self.byteRanges) || !self.byteRanges || "
                "((self.format == 'jsonl' || self.format == 'csv') && "
                "(!has(self.select) || !has(self.select.limit)))",
                BYTE_RANGES_RULE,
            ),
        )
    }

    uri: str = Field(
        min_length=1,
        description="Dataset location: a path in the pod (volume mount), `s3://`, `gs://`, "
        "`http(s)://`; a directory or glob for many files.",
    )
    format: InputFormat = Field(
        description="`jsonl`, `csv`, `parquet`, `files` (one item per file, e.g. images), or "
        "`dicom` (DICOM instances or series, see `dicom`)."
    )
    id_field: str | None = Field(
        default=None,
        description="Field holding a stable item id; the row number (or the relative path for "
        "`files`) when left out.",
    )
    select: Select | None = Field(default=None, description="Score a subset of the dataset.")
    preprocess: Preprocess | None = Field(default=None, description="Transform items into tensors.")
    dicom: DicomInput | None = Field(
        default=None,
        description="For `format: dicom`: item granularity, header selection, slice range, "
        "pixel settings (defaults apply when left out).",
    )
    byte_ranges: bool | None = Field(
        default=None,
        description="JSONL/CSV: plan shards as byte ranges of the files, aligned to line ends, "
        "without reading the data (the total is learned as shards count their ranges; rows "
        "without idField get the id `<file>:<range start>+<row in range>`). Left out: when "
        "the files hold 256 MiB or more. Not with select.limit, nor for CSV values with "
        "newlines inside quotes (set false).",
    )

    @model_validator(mode="after")
    def _dicom_only_for_dicom(self) -> InputSpec:
        if self.dicom is not None and self.format != InputFormat.DICOM:
            raise ValueError("input.dicom: only with format: dicom")
        if self.format == InputFormat.DICOM and self.preprocess and self.preprocess.image:
            raise ValueError(
                "input.preprocess.image: for `files`; DICOM pixels: input.dicom.pixels"
            )
        return self

    @model_validator(mode="after")
    def _byte_ranges(self) -> InputSpec:
        text = self.format in {InputFormat.JSONL, InputFormat.CSV}
        limit = self.select is not None and self.select.limit is not None
        if self.byte_ranges and (not text or limit):
            raise ValueError(BYTE_RANGES_RULE)
        return self


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class OutputSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="Directory for predictions, failures and manifests (path, `s3://`, `gs://`); "
        "empty or new, or this run's own: the plan refuses a location holding other files.",
    )
    format: OutputFormat = Field(default=OutputFormat.JSONL, description="`jsonl` or `parquet`.")
    include_fields: list[str] = Field(
        default_factory=list, description="Input fields copied next to each prediction."
    )
    combine: bool = Field(
        default=False, description="Also write all predictions as one file at the end."
    )
