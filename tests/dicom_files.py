"""DICOM files written by pydicom for the tests: CT slices with known geometry and values,
MONOCHROME1, multi-frame, JPEG-compressed, and broken ones."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# Slice values: stored = HU + 1024 (intercept -1024), so every slice's HU are known.
INTERCEPT = -1024.0


@dataclass
class Slice:
    path: Path
    sop: str
    hu: NDArray[np.float32]  # the values after rescale


def stored_values(number: int, rows: int = 8, columns: int = 8) -> NDArray[np.int16]:
    """Distinct, known stored values: slice `number` holds 100*number + pixel index."""
    return (100 * number + np.arange(rows * columns, dtype=np.int16)).reshape(rows, columns)


def _base(
    *,
    study: str,
    series: str,
    sop: str,
    modality: str,
    description: str,
    patient: str,
    body_part: str,
    sop_class: str = CTImageStorage,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.PatientID = patient
    ds.PatientName = "Test^Patient"
    ds.StudyDate = "20260102"
    ds.BodyPartExamined = body_part
    ds.Manufacturer = "TESTCO"
    return ds


def _pixels(ds: Dataset, stored: NDArray[Any], *, signed: bool = True) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()


def write_ct_series(
    directory: Path,
    *,
    slices: int = 5,
    study: str | None = None,
    series: str | None = None,
    spacing: float = 2.5,
    z0: float = -100.0,
    rows: int = 8,
    columns: int = 8,
    modality: str = "CT",
    description: str = "AXIAL CHEST",
    patient: str = "PATIENT-1",
    body_part: str = "CHEST",
    skip: tuple[int, ...] = (),
    shuffle: bool = True,
    window: tuple[float, float] | None = (40.0, 400.0),
) -> tuple[str, str, list[Slice]]:
    """A CT series of `slices` axial slices `spacing` mm apart (slice k at z0 + k*spacing),
    written in a shuffled file order with InstanceNumbers reversed (so only the positions
    give the right order); `skip` leaves slices out (a series with missing slices).
    Returns (study, series, slices in anatomical order, skipped ones left out)."""
    study = study or generate_uid()
    series = series or generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    order = list(range(slices))
    if shuffle:
        order = [order[i] for i in np.random.default_rng(7).permutation(slices)]
    for k in order:
        if k in skip:
            continue
        sop = generate_uid()
        ds = _base(
            study=study,
            series=series,
            sop=sop,
            modality=modality,
            description=description,
            patient=patient,
            body_part=body_part,
        )
        stored = stored_values(k, rows, columns)
        _pixels(ds, stored)
        ds.RescaleSlope = 1
        ds.RescaleIntercept = INTERCEPT
        ds.InstanceNumber = slices - k  # reversed: the position decides
        ds.ImagePositionPatient = [-10.0, -10.0, z0 + k * spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = spacing
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        path = directory / f"{series[-8:]}-{sop[-10:]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        made.append(Slice(path, sop, stored.astype(np.float32) + INTERCEPT))
    ordered = sorted(made, key=lambda s: float(s.hu[0, 0]))
    return study, series, ordered


def write_monochrome1(path: Path, *, study: str | None = None) -> tuple[str, NDArray[np.uint16]]:
    """A 12-bit MONOCHROME1 image (e.g. a radiograph); returns (SOP UID, stored values)."""
    sop = generate_uid()
    ds = _base(
        study=study or generate_uid(),
        series=generate_uid(),
        sop=sop,
        modality="CR",
        description="CHEST PA",
        patient="PATIENT-2",
        body_part="CHEST",
    )
    stored = (np.arange(64, dtype=np.uint16) * 60).reshape(8, 8)
    _pixels(ds, stored, signed=False)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return sop, stored


def write_multiframe(path: Path, frames: int = 4) -> tuple[str, str, NDArray[np.int16]]:
    """One file of `frames` 8x8 frames (frame f holds 1000*f + index); (series, sop, stored)."""
    sop, series = generate_uid(), generate_uid()
    ds = _base(
        study=generate_uid(),
        series=series,
        sop=sop,
        modality="MR",
        description="CINE",
        patient="PATIENT-3",
        body_part="HEART",
    )
    stored = np.stack(
        [1000 * f + np.arange(64, dtype=np.int16).reshape(8, 8) for f in range(frames)]
    )
    _pixels(ds, stored)
    ds.NumberOfFrames = frames
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return series, sop, stored


def write_jpeg(path: Path) -> tuple[str, NDArray[np.uint8]]:
    """An 8-bit JPEG baseline (lossy) secondary capture; (SOP UID, the values encoded)."""
    sop = generate_uid()
    ds = _base(
        study=generate_uid(),
        series=generate_uid(),
        sop=sop,
        modality="OT",
        description="JPEG",
        patient="PATIENT-4",
        body_part="HAND",
        sop_class=SecondaryCaptureImageStorage,
    )
    values = np.full((16, 16), 40, dtype=np.uint8)
    values[4:12, 4:12] = 200
    buffer = io.BytesIO()
    Image.fromarray(values, mode="L").save(buffer, format="JPEG", quality=95)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return sop, values


def write_unsupported(path: Path) -> str:
    """Pixel data in a transfer syntax no installed decoder reads (MPEG-2); its SOP UID."""
    sop = generate_uid()
    ds = _base(
        study=generate_uid(),
        series=generate_uid(),
        sop=sop,
        modality="XC",
        description="VIDEO",
        patient="PATIENT-5",
        body_part="EYE",
        sop_class=SecondaryCaptureImageStorage,
    )
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return sop


def write_no_pixels(path: Path) -> str:
    """A DICOM instance without pixel data (e.g. a structured report); its SOP UID."""
    sop = generate_uid()
    ds = _base(
        study=generate_uid(),
        series=generate_uid(),
        sop=sop,
        modality="SR",
        description="REPORT",
        patient="PATIENT-6",
        body_part="CHEST",
    )
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return sop
