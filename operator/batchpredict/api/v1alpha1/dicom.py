"""`input.format: dicom`: which instances or series to score and how their pixels are made."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from batchpredict.api.v1alpha1.base import ApiModel, cel, schema_extra


class Granularity(StrEnum):
    INSTANCE = "instance"
    SERIES = "series"


class DicomSelect(ApiModel):
    """Which instances to keep, from their headers (a value list keeps any of its values)."""

    modality: list[str] | None = Field(
        default=None, description="Keep these Modality values, e.g. [CT, MR]."
    )
    series_description: str | None = Field(
        default=None,
        description="Keep series whose SeriesDescription matches this glob "
        "(case-insensitive), e.g. `*AXIAL*`.",
    )
    study_instance_uids: list[str] | None = Field(
        default=None, description="Keep these studies (StudyInstanceUID)."
    )
    series_instance_uids: list[str] | None = Field(
        default=None, description="Keep these series (SeriesInstanceUID)."
    )
    body_part_examined: list[str] | None = Field(
        default=None, description="Keep these BodyPartExamined values (case-insensitive)."
    )
    tags: dict[str, str] | None = Field(
        default=None,
        description="Keep instances whose header attributes, by DICOM keyword (e.g. "
        "`Manufacturer`, `SliceThickness`), match these globs compared as text.",
    )


class Window(ApiModel):
    """Intensity window: values are clipped to center ± width/2 and scaled to [0, 1]."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "self.fromFile || (has(self.center) && has(self.width))",
                "window: set center and width, or fromFile: true",
            )
        )
    }

    center: float | None = Field(default=None, description="Window center (after rescale).")
    width: float | None = Field(default=None, gt=0, description="Window width (after rescale).")
    from_file: bool = Field(
        default=False,
        description="Use each file's own WindowCenter/WindowWidth (the first when it lists "
        "several); `center`/`width` are the fallback for files without one.",
    )

    @model_validator(mode="after")
    def _complete(self) -> Window:
        if not self.from_file and (self.center is None or self.width is None):
            raise ValueError("window: set center and width, or fromFile: true")
        return self


class DicomPixels(ApiModel):
    """How stored pixel values become the float32 tensor the model gets."""

    rescale: bool = Field(
        default=True,
        description="Apply RescaleSlope/RescaleIntercept (CT: Hounsfield units).",
    )
    window: Window | None = Field(
        default=None,
        description="Clip to a window and scale to [0, 1]; values kept as is when unset.",
    )
    invert_monochrome1: bool = Field(
        default=True,
        description="MONOCHROME1 images (white is low) are inverted so that high is bright.",
    )
    resize: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[rows, columns] each slice is resized to (bilinear).",
    )
    spacing: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=3,
        description="Resample to this pixel spacing in mm: [row, column] in-plane, or "
        "[slice, row, column] for series (linear); applied before `resize`.",
    )
    channels: bool = Field(
        default=False, description="Add a trailing channel axis of 1 (HW1 / DHW1)."
    )


class DicomInput(ApiModel):
    """Settings of `input.format: dicom`: a directory or prefix of DICOM files, indexed by
    their headers (Study, Series and SOP Instance UIDs) without reading pixels."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": schema_extra(
            cel(
                "!has(self.sliceRange) || (self.sliceRange[0] < 0) != (self.sliceRange[1] < 0)"
                " || self.sliceRange[0] < self.sliceRange[1]",
                "dicom.sliceRange: [start, stop) needs start < stop",
            )
        )
    }

    granularity: Granularity = Field(
        default=Granularity.SERIES,
        description="`series`: one item per series, its slices ordered along the slice normal "
        "(ImagePositionPatient, else InstanceNumber) and stacked into a volume, id "
        "SeriesInstanceUID; `instance`: one item per file (or frame set), id SOPInstanceUID. "
        "Either way a shard never splits a series.",
    )
    select: DicomSelect | None = Field(default=None, description="Keep instances by header values.")
    slice_range: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[start, stop): keep these slices of each series (0-based, in slice "
        "order; a negative value counts from the end).",
    )
    pixels: DicomPixels = Field(
        default_factory=DicomPixels, description="Rescale, window, resample, resize."
    )
    header_fields: list[str] = Field(
        default_factory=list,
        description="More header attributes (DICOM keywords) read into each item, for "
        "`select.where` and `output.includeFields`. Always there: StudyInstanceUID, "
        "SeriesInstanceUID, SOPInstanceUID (instance items), PatientID, StudyDate, Modality, "
        "SeriesDescription, BodyPartExamined, slices.",
    )
    pseudonymize_patient_id: bool = Field(
        default=False,
        description="Replace PatientID by a stable pseudonym (HMAC-SHA256 keyed by the "
        "worker's DICOM_PSEUDONYM_KEY environment variable, e.g. from a Secret, else "
        "plain SHA-256): results still group per patient.",
    )

    @model_validator(mode="after")
    def _range(self) -> DicomInput:
        if self.slice_range is not None:
            start, stop = self.slice_range
            if (start >= 0) == (stop >= 0) and start >= stop:
                raise ValueError("dicom.sliceRange: [start, stop) needs start < stop")
        return self
