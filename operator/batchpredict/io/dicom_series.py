"""A series' slices in order, and whether they make one consistent volume.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of
ImageOrientationPatient's row and column directions) when every slice has both, else by
InstanceNumber. A series whose slices differ in size or orientation, or share a position, is
inconsistent; one with a gap (a step over 1.5x the usual spacing, or a missing InstanceNumber)
is incomplete. Either fails as a series item with its reason; instance items do not need a
volume and ignore both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from batchpredict.io.dicom import Instance

INCONSISTENT = "INCONSISTENT_SERIES"
INCOMPLETE = "INCOMPLETE_SERIES"
# Positions closer than this (mm) are the same position; orientations closer are the same.
SAME_POSITION_MM = 1e-3
SAME_DIRECTION = 1e-3
# A step this much over the series' median spacing means slices are missing.
GAP_FACTOR = 1.5


@dataclass
class SeriesOrder:
    all_instances: list[Instance]  # the series' instances in slice order
    instances: list[Instance]  # those `sliceRange` keeps
    indices: list[int]  # each kept instance's slice index in the series
    frames: tuple[int, int] | None = None  # one multi-frame file: the frames kept
    spacing: float | None = None  # between slices, along the normal (mm)
    error: tuple[str, str] | None = None  # why the series is no volume


Vector = NDArray[np.float64]


def _normal(instances: Sequence[Instance]) -> Vector | None:
    if not all(i.orientation and i.position for i in instances):
        return None
    first = np.asarray(instances[0].orientation, dtype=np.float64)
    return np.cross(first[:3], first[3:])


def _along(instance: Instance, normal: Vector) -> float:
    return float(np.dot(np.asarray(instance.position, dtype=np.float64), normal))


def _problem(ordered: list[Instance], normal: Vector | None) -> tuple[str, str] | None:
    """Why `ordered` is no volume, or None."""
    sizes = {(i.rows, i.columns) for i in ordered}
    if len(sizes) > 1:
        return INCONSISTENT, f"series {ordered[0].series}: slices differ in size {sorted(sizes)}"
    if len(ordered) < 2:
        return None
    if normal is not None:
        return _position_problem(ordered, normal)
    return _number_problem(ordered)


def _position_problem(ordered: list[Instance], normal: Vector) -> tuple[str, str] | None:
    series = ordered[0].series
    first = np.asarray(ordered[0].orientation, dtype=np.float64)
    if any(
        not np.allclose(np.asarray(i.orientation, dtype=np.float64), first, atol=SAME_DIRECTION)
        for i in ordered
    ):
        return INCONSISTENT, f"series {series}: slices differ in ImageOrientationPatient"
    where = np.array([_along(i, normal) for i in ordered])
    steps = np.diff(where)
    same = np.flatnonzero(steps < SAME_POSITION_MM)
    if len(same):
        a, b = ordered[same[0]], ordered[same[0] + 1]
        return INCONSISTENT, (
            f"series {series}: {a.name} and {b.name} are at the same position "
            f"{where[same[0]]:.3f} mm along the slice normal"
        )
    usual = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * usual)
    if not len(gaps):
        return None
    g = gaps[0]
    missing = round(steps[g] / usual) - 1
    return INCOMPLETE, (
        f"series {series}: missing slices: {steps[g]:.2f} mm between slices {g} and "
        f"{g + 1} ({ordered[g].name}, {ordered[g + 1].name}) where the spacing is "
        f"{usual:.2f} mm (about {missing} missing)"
    )


def _number_problem(ordered: list[Instance]) -> tuple[str, str] | None:
    series = ordered[0].series
    known = [i.number for i in ordered if i.number is not None]
    if len(known) < len(ordered):
        return None  # nothing tells the order apart from the files' names: taken as listed
    if len(set(known)) < len(known):
        return INCONSISTENT, f"series {series}: InstanceNumber repeats and no ImagePositionPatient"
    absent = sorted(set(range(min(known), max(known) + 1)) - set(known))
    if absent:
        return INCOMPLETE, f"series {series}: missing slices: InstanceNumber {absent[:10]} absent"
    return None


def order_series(instances: list[Instance], slice_range: list[int] | None) -> SeriesOrder:
    """The series' slices in order, those `slice_range` keeps, and its problem if any."""
    normal = _normal(instances)
    if normal is not None:
        ordered = sorted(instances, key=lambda i: (_along(i, normal), i.number or 0, i.sop))
    else:
        ordered = sorted(instances, key=lambda i: (i.number is None, i.number or 0, i.name))
    error = _problem(ordered, normal)
    spacing = None
    if normal is not None and len(ordered) > 1 and error is None:
        where = [_along(i, normal) for i in ordered]
        spacing = float(np.median(np.diff(where)))
    order = SeriesOrder(ordered, ordered, list(range(len(ordered))), spacing=spacing, error=error)
    if len(ordered) == 1 and ordered[0].frames > 1:
        # One multi-frame file: its frames are the slices.
        if slice_range is not None:
            kept = range(ordered[0].frames)[slice(*slice_range)]
            order.frames = (kept.start, kept.stop) if len(kept) else None
            if not len(kept):
                order.instances, order.indices = [], []
        return order
    if slice_range is not None:
        kept = range(len(ordered))[slice(*slice_range)]
        order.instances = [ordered[k] for k in kept]
        order.indices = list(kept)
    return order
