"""DICOM datasets: the listing indexed by Study/Series/SOP Instance UID from headers alone.

Planning reads each file's header (pydicom, `stop_before_pixels`: no pixel bytes are read),
keeps the instances `input.dicom.select` asks for, groups them into series and orders each
series' slices along its normal (series.py). The items are then the series (one volume each)
or the instances, series after series: positions are contiguous per series, and the plan cuts
shards at series boundaries (`DicomIndex.group_sizes`). Pixels are read by the worker's
preprocessing pool from the `DicomSource` an item carries (worker/dicom_pixels.py).

The plan step stores the instances it indexed next to the plan (`dicom-index.json`), so every
shard numbers the same items the same way without reading the headers again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from batchpredict.api.v1alpha1.dicom import DicomInput, DicomPixels, DicomSelect, Granularity
from batchpredict.io.dicom_series import INCONSISTENT, SeriesOrder, order_series
from batchpredict.io.readers import SOURCE_FIELD

__all__ = ["DicomIndex", "DicomSource", "Instance", "build_index"]
UNREADABLE = "UNREADABLE_ITEM"
DUPLICATE = "DUPLICATE_INSTANCE"
# Header attributes every item carries (besides those `dicom.headerFields` adds).
BASE_FIELDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
)
PSEUDONYM_KEY_ENV = "DICOM_PSEUDONYM_KEY"
# Headers read at once: object stores answer each with a round trip.
HEADER_THREADS = 8
HEADER_BLOCK = 64 * 1024
# Files that are DICOM but hold no image (the media directory).
_NOT_IMAGES = frozenset({"DICOMDIR"})


class DicomSpecError(ValueError):
    """`input.dicom` names something that cannot be: a header keyword DICOM does not have."""


@dataclass(frozen=True)
class Instance:
    """One file, as its header describes it (or why it could not be read)."""

    path: str
    name: str  # relative to the dataset root: messages and ids of unreadable files
    study: str = ""
    series: str = ""
    sop: str = ""
    number: int | None = None
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    frames: int = 1
    rows: int = 0
    columns: int = 0
    header: dict[str, str | None] = field(default_factory=dict)
    error: tuple[str, str] | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Instance:
        for key in ("position", "orientation", "error"):
            if data.get(key) is not None:
                data = {**data, key: tuple(data[key])}
        return cls(**data)


@dataclass(frozen=True)
class DicomSource:
    """Where an item's pixels are: the files the index listed (never a path from data), in
    slice order, and how to turn them into a tensor. Picklable."""

    fs: Any
    paths: tuple[str, ...]
    names: tuple[str, ...]
    pixels: DicomPixels
    volume: bool  # a series item: slices stacked on a first axis
    # [start, stop) of the frames of a series held in one multi-frame file
    frames: tuple[int, int] | None = None
    # slice spacing along the normal (mm), for resampling series
    slice_spacing: float | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def pseudonym(patient_id: str | None) -> str | None:
    """A stable pseudonym: HMAC-SHA256 with the pod's key, else SHA-256 (guessable from a
    list of real IDs: set the key for anything but tests)."""
    if patient_id is None:
        return None
    key = os.environ.get(PSEUDONYM_KEY_ENV, "").encode()
    data = patient_id.encode()
    digest = hmac.new(key, data, hashlib.sha256) if key else hashlib.sha256(data)
    return "anon-" + digest.hexdigest()[:24]


def check_keywords(settings: DicomInput) -> None:
    """Every keyword the spec names is a DICOM attribute (a typo would select nothing)."""
    from pydicom.datadict import tag_for_keyword  # noqa: PLC0415 (DICOM datasets only)

    select = settings.select or DicomSelect()
    named = [*settings.header_fields, *(select.tags or {})]
    unknown = [k for k in named if tag_for_keyword(k) is None]
    if unknown:
        raise DicomSpecError(
            f"spec.input.dicom: {unknown} are not DICOM attribute keywords "
            "(e.g. Manufacturer, SliceThickness, ProtocolName)"
        )


def read_header(fs: Any, path: str, name: str, keywords: Sequence[str]) -> Instance:
    """An instance from its header; a file that is not DICOM becomes an Instance with an
    error (it fails alone, as an item named by its path)."""
    import pydicom  # noqa: PLC0415 (DICOM datasets only)
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    try:
        # Small read-ahead: object stores would fetch megabytes of pixels with the header.
        with fs.open(path, "rb", block_size=HEADER_BLOCK) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
    except InvalidDicomError:
        return Instance(path, name, error=(UNREADABLE, f"{name}: not a DICOM file"))
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        return Instance(path, name, error=(UNREADABLE, f"{name}: cannot read header: {error}"))
    missing = [k for k in ("SeriesInstanceUID", "SOPInstanceUID") if not ds.get(k)]
    if missing:
        return Instance(path, name, error=(UNREADABLE, f"{name}: no {' or '.join(missing)}"))
    try:
        position = tuple(float(v) for v in ds.get("ImagePositionPatient") or ()) or None
        orientation = tuple(float(v) for v in ds.get("ImageOrientationPatient") or ()) or None
        number = ds.get("InstanceNumber")
        header = {k: _text(ds.get(k)) for k in keywords}
        return Instance(
            path,
            name,
            study=str(ds.get("StudyInstanceUID") or ""),
            series=str(ds.SeriesInstanceUID),
            sop=str(ds.SOPInstanceUID),
            number=int(number) if number not in (None, "") else None,
            position=position if position and len(position) == 3 else None,
            orientation=orientation if orientation and len(orientation) == 6 else None,
            frames=int(ds.get("NumberOfFrames") or 1),
            rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0),
            header=header,
        )
    except (ValueError, TypeError) as error:
        return Instance(path, name, error=(UNREADABLE, f"{name}: malformed header: {error}"))


def _glob(value: str | None, pattern: str) -> bool:
    return value is not None and fnmatch.fnmatchcase(value.upper(), pattern.upper())


def selected(instance: Instance, select: DicomSelect) -> bool:
    """Whether `select` keeps the instance (an unreadable file is always kept: it fails)."""
    if instance.error is not None:
        return True
    header = instance.header

    def one_of(values: list[str] | None, key: str) -> bool:
        wanted = {v.upper() for v in values or ()}
        return not wanted or (header.get(key) or "").upper() in wanted

    return (
        one_of(select.modality, "Modality")
        and one_of(select.body_part_examined, "BodyPartExamined")
        and (not select.study_instance_uids or instance.study in select.study_instance_uids)
        and (not select.series_instance_uids or instance.series in select.series_instance_uids)
        and (
            select.series_description is None
            or _glob(header.get("SeriesDescription"), select.series_description)
        )
        and all(_glob(header.get(k), v) for k, v in (select.tags or {}).items())
    )


def _keywords(settings: DicomInput) -> list[str]:
    select = settings.select or DicomSelect()
    named = [*BASE_FIELDS, *settings.header_fields, *(select.tags or {})]
    return list(dict.fromkeys(named))


def build_index(
    fs: Any, files: Sequence[str], names: Sequence[str], settings: DicomInput
) -> DicomIndex:
    """Read every file's header (a few at a time) and index what `settings.select` keeps."""
    check_keywords(settings)
    keywords = _keywords(settings)
    todo = [
        (p, n) for p, n in zip(files, names, strict=True) if n.rsplit("/", 1)[-1] not in _NOT_IMAGES
    ]
    with ThreadPoolExecutor(HEADER_THREADS, thread_name_prefix="dicom-header") as pool:
        instances = list(pool.map(lambda pn: read_header(fs, pn[0], pn[1], keywords), todo))
    select = settings.select or DicomSelect()
    kept = [i for i in instances if selected(i, select)]
    if settings.pseudonymize_patient_id:
        kept = [
            i if i.error else _with_header(i, PatientID=pseudonym(i.header.get("PatientID")))
            for i in kept
        ]
    return DicomIndex(fs, kept, settings)


def _with_header(instance: Instance, **values: str | None) -> Instance:
    return Instance(**{**asdict(instance), "header": {**instance.header, **values}})


@dataclass
class Item:
    """One item of the dataset: a series or an instance, or a file that failed alone."""

    id: str
    row: dict[str, Any] | None
    error: tuple[str, str] | None = None


class DicomIndex:
    """The kept instances grouped into ordered series, and the items they make."""

    def __init__(self, fs: Any, instances: list[Instance], settings: DicomInput) -> None:
        self.fs = fs
        self.instances = instances
        self.settings = settings
        self.items = self._items()

    def to_wire(self) -> dict[str, Any]:
        return {"instances": [asdict(i) for i in self.instances]}

    @classmethod
    def from_wire(cls, fs: Any, data: dict[str, Any], settings: DicomInput) -> DicomIndex:
        return cls(fs, [Instance.from_wire(i) for i in data["instances"]], settings)

    def fields(self) -> list[str]:
        extra = ["slices"] if self.settings.granularity == Granularity.SERIES else []
        if self.settings.granularity == Granularity.INSTANCE:
            extra = ["SOPInstanceUID", "sliceIndex"]
        return [*_keywords(self.settings), *extra]

    @property
    def instance_items(self) -> bool:
        """Items are instances: a series spans several items (the plan never cuts inside
        one); series items need no such care."""
        return self.settings.granularity == Granularity.INSTANCE

    def _items(self) -> list[Item]:
        """Items in dataset order: unreadable files by name, then series by (study, series
        UID), slices in order within."""
        items: list[Item] = []
        seen: dict[str, str] = {}
        by_series: dict[str, list[Instance]] = {}
        for instance in sorted(self.instances, key=lambda i: i.name):
            if instance.error is not None:
                items.append(Item(instance.name, None, instance.error))
                continue
            if instance.sop in seen:  # the same instance twice: ids must stay unique
                message = (
                    f"{instance.name}: SOPInstanceUID {instance.sop} is also {seen[instance.sop]}"
                )
                items.append(Item(instance.name, None, (DUPLICATE, message)))
                continue
            seen[instance.sop] = instance.name
            by_series.setdefault(instance.series, []).append(instance)
        # A series UID is unique in the world: grouped by it alone, so that its item id is.
        for series in sorted(by_series, key=lambda s: (min(i.study for i in by_series[s]), s)):
            order = order_series(by_series[series], self.settings.slice_range)
            studies = sorted({i.study for i in by_series[series]})
            if len(studies) > 1:  # before any geometry: these are not one volume
                order.error = (
                    INCONSISTENT,
                    f"series {series}: its instances name {len(studies)} studies {studies}",
                )
            items += self._series_items(order)
        return items

    def _series_items(self, order: SeriesOrder) -> list[Item]:
        first = order.instances[0] if order.instances else order.all_instances[0]
        header = dict(first.header)
        pixels = self.settings.pixels
        if self.settings.granularity == Granularity.SERIES:
            if order.error is not None:
                return [Item(first.series, None, order.error)]
            if not order.instances:
                return []  # sliceRange kept no slice of it
            source = DicomSource(
                self.fs,
                tuple(i.path for i in order.instances),
                tuple(i.name for i in order.instances),
                pixels,
                volume=True,
                frames=order.frames,
                slice_spacing=order.spacing,
            )
            slices = (
                len(order.instances) if order.frames is None else order.frames[1] - order.frames[0]
            )
            row = {**header, "slices": slices, SOURCE_FIELD: source}
            return [Item(first.series, row)]
        made = []
        for index, instance in zip(order.indices, order.instances, strict=True):
            source = DicomSource(
                self.fs,
                (instance.path,),
                (instance.name,),
                pixels,
                volume=False,
                frames=order.frames,
            )
            row = {**instance.header, "SOPInstanceUID": instance.sop, "sliceIndex": index}
            made.append(Item(instance.sop, {**row, SOURCE_FIELD: source}))
        return made

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
