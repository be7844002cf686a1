"""A DICOM item's pixels as the float32 tensor its model gets (runs in the preprocessing pool).

Per file: stored values -> RescaleSlope/RescaleIntercept (CT: Hounsfield units) -> window
(clip to center ± width/2, scaled to [0, 1]) -> MONOCHROME1 inverted (high is bright). A series
stacks its slices in the index's order into [slices, rows, columns]; a multi-frame file gives
its frames the same way. Then resampling to a pixel spacing and resizing to a shape, both
linear. Each failure is the item's alone, with the file and the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchpredict.api.v1alpha1.dicom import DicomPixels
from batchpredict.io.dicom import DicomSource
from batchpredict.worker.transform import PREPROCESS_FAILED, UNREADABLE, ItemError

UNSUPPORTED = "UNSUPPORTED_TRANSFER_SYNTAX"
INCONSISTENT = "INCONSISTENT_SERIES"
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_item(source: DicomSource) -> NDArray[np.float32]:
    """The item's tensor: [rows, columns] (an instance), [frames|slices, rows, columns]."""
    slices: list[NDArray[np.float32]] = []
    spacing: tuple[float, float] | None = None
    color = False
    for path, name in zip(source.paths, source.names, strict=True):
        ds = _read(source.fs, path, name)
        values = _values(ds, name, source.pixels)
        color = int(ds.get("SamplesPerPixel") or 1) > 1
        if _frames(ds) > 1:  # frames first: each is a slice
            if source.frames is not None:
                values = values[source.frames[0] : source.frames[1]]
            slices.extend(list(values))
        else:
            slices.append(values)
        spacing = spacing or _pixel_spacing(ds)
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise ItemError(INCONSISTENT, f"{source.names[0]}: slices differ in size {sorted(shapes)}")
    volume = np.stack(slices) if source.volume or len(slices) > 1 else slices[0]
    return _geometry(volume, source, spacing, color=color)


def _read(fs: Any, path: str, name: str) -> Any:
    import pydicom  # noqa: PLC0415 (DICOM datasets only)
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    try:
        with fs.open(path, "rb") as handle:
            return pydicom.dcmread(handle)
    except InvalidDicomError:
        raise ItemError(UNREADABLE, f"{name}: not a DICOM file") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise ItemError(UNREADABLE, f"{name}: cannot read: {error}") from None


def _frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _stored(ds: Any, name: str) -> NDArray[Any]:
    """The stored values, decoded (compressed transfer syntaxes through pylibjpeg)."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise ItemError(UNREADABLE, f"{name}: no pixel data (not an image instance)")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError) as error:
        described = f"{syntax.name} ({syntax})" if syntax is not None else "unknown"
        raise ItemError(
            UNSUPPORTED,
            f"{name}: cannot decode transfer syntax {described}: {str(error).splitlines()[0]}",
        ) from None
    except (ValueError, TypeError, AttributeError, KeyError, OSError) as error:
        raise ItemError(UNREADABLE, f"{name}: cannot decode pixel data: {error}") from None


def _values(ds: Any, name: str, spec: DicomPixels) -> NDArray[np.float32]:
    stored = _stored(ds, name)
    values = stored.astype(np.float32)
    slope, intercept = 1.0, 0.0
    if spec.rescale:
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
        values = values * np.float32(slope) + np.float32(intercept)
    monochrome1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if spec.window is not None:
        center, width = _window(ds, spec, name)
        low = center - width / 2
        values = np.clip((values - np.float32(low)) / np.float32(width), 0.0, 1.0)
        if monochrome1 and spec.invert_monochrome1:
            values = 1.0 - values
    elif monochrome1 and spec.invert_monochrome1:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        lowest, highest = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        # The stored range mirrored onto itself (after rescale): lowest <-> highest.
        values = np.float32(slope * (lowest + highest) + 2 * intercept) - values
    return values.astype(np.float32, copy=False)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return float(value[0]) if len(value) else None
    return float(value)


def _window(ds: Any, spec: DicomPixels, name: str) -> tuple[float, float]:
    window = spec.window
    assert window is not None  # noqa: S101 (checked by the caller)
    center, width = window.center, window.width
    if window.from_file:
        center = _first(ds.get("WindowCenter")) if "WindowCenter" in ds else center
        width = _first(ds.get("WindowWidth")) if "WindowWidth" in ds else width
    if center is None or width is None or width <= 0:
        raise ItemError(
            PREPROCESS_FAILED,
            f"{name}: no WindowCenter/WindowWidth in the file and no window.center/width set",
        )
    return float(center), float(width)


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None or len(spacing) != 2:
        return None
    return float(spacing[0]), float(spacing[1])


def _geometry(
    volume: NDArray[np.float32],
    source: DicomSource,
    spacing: tuple[float, float] | None,
    *,
    color: bool,
) -> NDArray[np.float32]:
    """Resampled and resized in-plane (and along slices); `color`: a trailing samples axis."""
    spec = source.pixels
    plane = (volume.ndim - 3, volume.ndim - 2) if color else (volume.ndim - 2, volume.ndim - 1)
    if spec.spacing is not None:
        target = list(spec.spacing)
        if len(target) == 3:
            if volume.ndim - color == 3 and volume.shape[0] > 1:
                if source.slice_spacing is None:
                    raise ItemError(
                        PREPROCESS_FAILED,
                        f"{source.names[0]}: no slice spacing (ImagePositionPatient) to resample",
                    )
                volume = _resample(volume, 0, source.slice_spacing, target[0])
            target = target[1:]
        if spacing is None:
            raise ItemError(PREPROCESS_FAILED, f"{source.names[0]}: no PixelSpacing to resample")
        for axis, have, want in zip(plane, spacing, target, strict=True):
            volume = _resample(volume, axis, have, want)
    if spec.resize is not None:
        for axis, size in zip(plane, spec.resize, strict=True):
            volume = _linear(volume, axis, np.linspace(0, volume.shape[axis] - 1, size))
    if spec.channels and not color:
        volume = volume[..., None]
    return np.ascontiguousarray(volume, dtype=np.float32)


def _resample(volume: NDArray[np.float32], axis: int, have: float, want: float) -> NDArray[Any]:
    """Linear resampling of `axis` from a spacing of `have` mm to `want` mm."""
    size = volume.shape[axis]
    count = max(1, int(np.floor((size - 1) * have / want)) + 1)
    return _linear(volume, axis, np.arange(count) * (want / have))


def _linear(volume: NDArray[Any], axis: int, where: NDArray[Any]) -> NDArray[np.float32]:
    """Values at fractional indices `where` along `axis`, linearly interpolated."""
    size = volume.shape[axis]
    where = np.clip(where, 0, size - 1)
    low = np.floor(where).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    shape = [1] * volume.ndim
    shape[axis] = len(where)
    weight = (where - low).astype(np.float32).reshape(shape)
    below = np.take(volume, low, axis=axis)
    above = np.take(volume, high, axis=axis)
    blended: NDArray[np.float32] = (below * (1 - weight) + above * weight).astype(np.float32)
    return blended
