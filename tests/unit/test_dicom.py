"""`input.format: dicom`: the header index, selection, slice order and ranges, pixel values
after rescale and windowing, per-item errors, and shards that never split a series."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from batchpredict.api.v1alpha1.data import InputSpec
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.io.dicom import DicomIndex, DicomSpecError, pseudonym
from batchpredict.io.readers import Dataset, open_dataset
from batchpredict.planning import ShardPlan, plan_shards
from batchpredict.triton.tensors import InputBinding
from batchpredict.worker.transform import ItemTransform
from tests.dicom_files import (
    INTERCEPT,
    write_ct_series,
    write_jpeg,
    write_monochrome1,
    write_multiframe,
    write_no_pixels,
    write_unsupported,
)


def dataset(root: Path, **dicom: Any) -> Dataset:
    return open_dataset(
        InputSpec.model_validate({"uri": str(root), "format": "dicom", "dicom": dicom})
    )


def outcomes(data: Dataset) -> dict[str, Any]:
    """id -> the item's tensor, or (code, message); in dataset order."""
    transform = ItemTransform([InputBinding("x", "$item", "FP32", (-1, -1, -1))])
    result: dict[str, Any] = {}
    for batch in data.iter_items():
        for i in range(len(batch)):
            if i in batch.errors:
                result[batch.id_at(i)] = batch.errors[i]
                continue
            assert batch.rows is not None
            row = batch.rows[i]
            assert row is not None
            # The array itself, before the tensor binding reshapes it.
            result[batch.id_at(i)] = transform._transform(row)["$item"]
    return result


def rows(data: Dataset) -> dict[str, dict[str, Any]]:
    return {b.id_at(i): r for b in data.iter_items() for i, r in enumerate(b.rows or []) if r}


def item_outcomes(data: Dataset, shape: tuple[int, ...] = (-1, -1, -1)) -> dict[str, Any]:
    """Like `outcomes`, through ItemTransform.apply (errors as a user sees them)."""
    transform = ItemTransform([InputBinding("x", "$item", "FP32", shape)])
    result: dict[str, Any] = {}
    for batch in data.iter_items():
        for i in range(len(batch)):
            row = batch.rows[i] if batch.rows else None
            result[batch.id_at(i)] = batch.errors[i] if row is None else transform.apply(row)
    return result


def test_a_series_is_one_volume_in_anatomical_order_in_hounsfield_units(tmp_path: Path) -> None:
    study, series, slices = write_ct_series(tmp_path / "ct", slices=5)
    data = dataset(tmp_path)
    assert data.count() == 1
    volume = outcomes(data)[series]
    # Files were written shuffled with InstanceNumbers reversed: the positions decide.
    expected = np.stack([s.hu for s in slices])
    assert volume.shape == (5, 8, 8)
    np.testing.assert_array_equal(volume, expected)
    assert volume[0, 0, 0] == INTERCEPT  # slice 0's first pixel stored 0 -> -1024 HU
    row = rows(data)[series]
    assert row["StudyInstanceUID"] == study
    assert row["slices"] == 5
    assert row["Modality"] == "CT"
    assert row["PatientID"] == "PATIENT-1"


def test_window_center_width_and_the_files_own(tmp_path: Path) -> None:
    _, series, slices = write_ct_series(tmp_path / "ct", slices=3, window=(-900.0, 200.0))
    hu = np.stack([s.hu for s in slices])
    given = outcomes(dataset(tmp_path, pixels={"window": {"center": -950, "width": 100}}))
    np.testing.assert_allclose(given[series], np.clip((hu + 1000) / 100, 0, 1), atol=1e-6)
    own = outcomes(dataset(tmp_path, pixels={"window": {"fromFile": True}}))
    np.testing.assert_allclose(own[series], np.clip((hu + 1000) / 200, 0, 1), atol=1e-6)
    assert 0 < own[series].mean() < 1
    raw = outcomes(dataset(tmp_path, pixels={"rescale": False}))
    np.testing.assert_array_equal(raw[series], hu - INTERCEPT)


def test_instances_are_items_keyed_by_sop_uid_in_slice_order(tmp_path: Path) -> None:
    _, series, slices = write_ct_series(tmp_path / "ct", slices=4)
    data = dataset(tmp_path, granularity="instance")
    got = outcomes(data)
    assert list(got) == [s.sop for s in slices]
    for s in slices:
        np.testing.assert_array_equal(got[s.sop], s.hu)
    meta = rows(data)
    assert [meta[s.sop]["sliceIndex"] for s in slices] == [0, 1, 2, 3]
    assert {meta[s.sop]["SeriesInstanceUID"] for s in slices} == {series}
    assert data.group_sizes() == [4]


def test_slice_range_keeps_slices_of_each_series(tmp_path: Path) -> None:
    _, series, slices = write_ct_series(tmp_path / "ct", slices=6)
    volume = outcomes(dataset(tmp_path, sliceRange=[1, -1]))[series]
    np.testing.assert_array_equal(volume, np.stack([s.hu for s in slices[1:-1]]))
    data = dataset(tmp_path, granularity="instance", sliceRange=[4, 100])
    assert list(outcomes(data)) == [s.sop for s in slices[4:]]
    assert [r["sliceIndex"] for r in rows(data).values()] == [4, 5]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    sop, stored = write_monochrome1(tmp_path / "cr.dcm")
    got = outcomes(dataset(tmp_path, granularity="instance"))[sop]
    np.testing.assert_array_equal(got, 4095 - stored.astype(np.float32))  # 12 bits stored
    windowed = outcomes(
        dataset(
            tmp_path, granularity="instance", pixels={"window": {"center": 2048, "width": 4096}}
        )
    )[sop]
    np.testing.assert_allclose(windowed, 1 - stored / 4096, atol=1e-6)
    kept = outcomes(dataset(tmp_path, granularity="instance", pixels={"invertMonochrome1": False}))
    np.testing.assert_array_equal(kept[sop], stored)


def test_multi_frame_files_give_their_frames_and_slice_range_picks_frames(tmp_path: Path) -> None:
    series, sop, stored = write_multiframe(tmp_path / "cine.dcm", frames=4)
    np.testing.assert_array_equal(outcomes(dataset(tmp_path))[series], stored)
    np.testing.assert_array_equal(outcomes(dataset(tmp_path, granularity="instance"))[sop], stored)
    np.testing.assert_array_equal(
        outcomes(dataset(tmp_path, sliceRange=[1, 3]))[series], stored[1:3]
    )
    assert rows(dataset(tmp_path, sliceRange=[1, 3]))[series]["slices"] == 2


def test_jpeg_compressed_pixels_decode(tmp_path: Path) -> None:
    sop, values = write_jpeg(tmp_path / "sc.dcm")
    got = outcomes(dataset(tmp_path, granularity="instance"))[sop]
    assert got.shape == (16, 16)
    assert np.abs(got - values).max() <= 8  # lossy, but close: 40 outside, 200 inside
    assert got[8, 8] > 180 and got[0, 0] < 60


@pytest.mark.parametrize(
    "variant",
    [
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_pydicoms_own_files_in_every_transfer_syntax_read_the_same(
    tmp_path: Path, variant: str
) -> None:
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    expected = reference.pixel_array.astype(np.float32)
    shutil.copy(get_testdata_file(variant), tmp_path / variant)
    got = outcomes(dataset(tmp_path, granularity="instance"))
    assert list(got) == [reference.SOPInstanceUID]
    np.testing.assert_array_equal(got[reference.SOPInstanceUID], expected)


def test_pydicoms_ct_is_rescaled_to_hounsfield_units(tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    got = outcomes(dataset(tmp_path))[ds.SeriesInstanceUID]
    assert got.shape == (1, *ds.pixel_array.shape)
    np.testing.assert_allclose(got[0], hu)


def test_each_broken_item_fails_alone_with_its_reason(tmp_path: Path) -> None:
    _, good, _ = write_ct_series(tmp_path / "good", slices=3)
    _, gap, _ = write_ct_series(tmp_path / "gap", slices=6, skip=(3,))
    _, twice, made = write_ct_series(tmp_path / "twice", slices=3)
    duplicate = pydicom.dcmread(made[0].path)  # another file at slice 0's position
    duplicate.SOPInstanceUID = duplicate.file_meta.MediaStorageSOPInstanceUID = "1.2.3.999"
    duplicate.save_as(tmp_path / "twice" / "copy.dcm", enforce_file_format=True)
    write_no_pixels(tmp_path / "sr.dcm")
    write_unsupported(tmp_path / "video.dcm")
    (tmp_path / "notes.txt").write_text("not dicom\n")
    data = dataset(tmp_path, granularity="series")
    series_of = {r["SeriesInstanceUID"]: i for i, r in rows(data).items()}
    got = item_outcomes(data)
    assert isinstance(got[good], list)
    code, message = got[gap]
    assert code == "INCOMPLETE_SERIES"
    assert "missing slices: 5.00 mm between slices 2 and 3" in message
    assert "spacing is 2.50 mm (about 1 missing)" in message
    code, message = got[twice]
    assert code == "INCONSISTENT_SERIES" and "at the same position" in message
    assert got["notes.txt"] == ("UNREADABLE_ITEM", "notes.txt: not a DICOM file")
    code, message = got[series_of[pydicom.dcmread(tmp_path / "sr.dcm").SeriesInstanceUID]]
    assert (code, message) == ("UNREADABLE_ITEM", "sr.dcm: no pixel data (not an image instance)")
    code, message = got[series_of[pydicom.dcmread(tmp_path / "video.dcm").SeriesInstanceUID]]
    assert code == "UNSUPPORTED_TRANSFER_SYNTAX"
    assert message.startswith("video.dcm: cannot decode transfer syntax MPEG2 Main Profile")
    # Instances do not need a volume: the incomplete series' slices are fine one by one.
    by_instance = item_outcomes(dataset(tmp_path, granularity="instance"), (-1, -1))
    assert sum(isinstance(v, list) for v in by_instance.values()) == 3 + 5 + 4


def test_selection_by_header_values(tmp_path: Path) -> None:
    study, chest, _ = write_ct_series(tmp_path / "a", slices=2, description="AXIAL CHEST")
    _, head, _ = write_ct_series(
        tmp_path / "b", slices=2, study=study, description="SAG HEAD", body_part="HEAD"
    )
    _, mr, _ = write_ct_series(tmp_path / "c", slices=2, modality="MR", description="T1 AXIAL")

    def ids(**select: Any) -> set[str]:
        return set(outcomes(dataset(tmp_path, select=select)))

    assert ids() == {chest, head, mr}
    assert ids(modality=["CT"]) == {chest, head}
    assert ids(seriesDescription="*axial*") == {chest, mr}
    assert ids(studyInstanceUids=[study]) == {chest, head}
    assert ids(seriesInstanceUids=[mr]) == {mr}
    assert ids(bodyPartExamined=["head"]) == {head}
    assert ids(tags={"Manufacturer": "TEST*", "SliceThickness": "2.5"}) == {chest, head, mr}
    assert ids(tags={"Manufacturer": "OTHER"}) == set()
    with pytest.raises(DicomSpecError, match="SliceThikness"):
        dataset(tmp_path, select={"tags": {"SliceThikness": "1"}}).count()


def test_patient_ids_can_be_pseudonymised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, series, _ = write_ct_series(tmp_path / "ct", slices=2)
    plain = rows(dataset(tmp_path))[series]["PatientID"]
    hidden = rows(dataset(tmp_path, pseudonymizePatientId=True))[series]["PatientID"]
    assert plain == "PATIENT-1"
    assert hidden.startswith("anon-") and "PATIENT" not in hidden
    assert hidden == pseudonym("PATIENT-1")  # stable: results group per patient
    monkeypatch.setenv("DICOM_PSEUDONYM_KEY", "secret")
    assert pseudonym("PATIENT-1") not in {hidden, None}


def test_resize_and_resample_to_a_spacing(tmp_path: Path) -> None:
    _, series, slices = write_ct_series(tmp_path / "ct", slices=5, spacing=2.5)
    hu = np.stack([s.hu for s in slices])
    resized = outcomes(dataset(tmp_path, pixels={"resize": [4, 4], "channels": True}))[series]
    assert resized.shape == (5, 4, 4, 1)
    assert resized[0, 0, 0, 0] == hu[0, 0, 0] and resized[0, -1, -1, 0] == hu[0, -1, -1]
    # 2.5 mm slices to 5 mm, 0.5 mm pixels to 1 mm: every other slice, row and column.
    coarse = outcomes(dataset(tmp_path, pixels={"spacing": [5.0, 1.0, 1.0]}))[series]
    np.testing.assert_allclose(coarse, hu[::2, ::2, ::2])
    finer = outcomes(dataset(tmp_path, pixels={"spacing": [1.25, 0.5, 0.5]}))[series]
    assert finer.shape == (9, 8, 8)
    np.testing.assert_allclose(finer[1], (hu[0] + hu[1]) / 2)


def test_the_plans_index_numbers_items_the_same_way(tmp_path: Path) -> None:
    for n in range(3):
        write_ct_series(tmp_path / f"s{n}", slices=2 + n)
    data = dataset(tmp_path, granularity="instance")
    wire = data.dicom_index().to_wire()
    again = dataset(tmp_path, granularity="instance")
    assert again.spec.dicom is not None
    again.dicom = DicomIndex.from_wire(again.fs, wire, again.spec.dicom)
    (tmp_path / "s0" / "late.dcm").write_bytes(b"added after the plan")
    assert list(outcomes(again)) == list(outcomes(data))


def test_shards_never_split_a_series(tmp_path: Path) -> None:
    sizes = [7, 1, 3, 12, 2, 5]
    series = [
        write_ct_series(tmp_path / f"s{n}", slices=k, shuffle=False)[1] for n, k in enumerate(sizes)
    ]
    data = dataset(tmp_path, granularity="instance")
    total = data.count()
    groups = data.group_sizes()
    assert groups is not None and sorted(groups) == sorted(sizes)
    series_at = [r["SeriesInstanceUID"] for r in rows(data).values()]
    assert sorted(set(series_at)) == sorted(series)
    for shards in (1, 2, 3, 4, 6, 10):
        spec = BatchPredictionSpec.model_validate(
            {
                "model": {"name": "m"},
                "input": {"uri": "x", "format": "dicom"},
                "output": {"uri": "y"},
                "shards": shards,
            }
        )
        planned = plan_shards(total, spec, groups=groups)
        plan = ShardPlan.from_wire({**planned.to_wire(), **planned.starts_wire()})
        assert plan.shards == min(shards, len(sizes))
        held: dict[str, set[int]] = {}
        covered = []
        for shard in range(plan.shards):
            for position in plan.shard_range(shard):
                held.setdefault(series_at[position], set()).add(shard)
                assert plan.shard_of(position) == shard
                covered.append(position)
        assert covered == list(range(total))
        assert all(len(s) == 1 for s in held.values()), (shards, held)


def test_spec_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"input\.dicom: only with format: dicom"):
        InputSpec.model_validate({"uri": "/d", "format": "files", "dicom": {}})
    with pytest.raises(ValueError, match=r"DICOM pixels: input\.dicom\.pixels"):
        InputSpec.model_validate(
            {"uri": "/d", "format": "dicom", "preprocess": {"image": {"resize": [8, 8]}}}
        )
    with pytest.raises(ValueError, match="window: set center and width"):
        InputSpec.model_validate(
            {"uri": "/d", "format": "dicom", "dicom": {"pixels": {"window": {"center": 1}}}}
        )
    with pytest.raises(ValueError, match=r"sliceRange: \[start, stop\) needs start < stop"):
        InputSpec.model_validate({"uri": "/d", "format": "dicom", "dicom": {"sliceRange": [3, 3]}})


def test_groups_follow_select_where_and_limit(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", slices=4)
    write_ct_series(tmp_path / "b", slices=5, body_part="HEAD")
    write_ct_series(tmp_path / "c", slices=6)
    spec = {
        "uri": str(tmp_path),
        "format": "dicom",
        "dicom": {"granularity": "instance"},
        "select": {"where": {"BodyPartExamined": "CHEST"}, "limit": 7},
    }
    data = open_dataset(InputSpec.model_validate(spec))
    assert data.count() == 7
    groups = data.group_sizes()
    assert groups is not None and sum(groups) == 7
    assert sorted(groups) in ([3, 4], [1, 6])  # the second series cut by the limit
    assert {r["BodyPartExamined"] for r in rows(data).values()} == {"CHEST"}
    assert dataset(tmp_path).group_sizes() is None  # series items: any cut is between series


def test_a_series_uid_in_two_studies_is_one_inconsistent_item(tmp_path: Path) -> None:
    _, series, _ = write_ct_series(tmp_path / "a", slices=2, z0=0.0)
    write_ct_series(tmp_path / "b", slices=2, series=series, z0=100.0)
    got = item_outcomes(dataset(tmp_path))
    assert list(got) == [series]
    code, message = got[series]
    assert code == "INCONSISTENT_SERIES" and "name 2 studies" in message
