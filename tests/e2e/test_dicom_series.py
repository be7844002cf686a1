"""A DICOM series dataset through the real operator, Job controller and Triton: one prediction
per series keyed by SeriesInstanceUID, grouped per study and patient from the carried header
fields; a series with a missing slice and a file that is not DICOM fail alone."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.uid import generate_uid

from tests.dicom_files import write_ct_series, write_monochrome1
from tests.e2e.conftest import OperatorProcess, batch_prediction, get_bp, wait_for_phase
from tests.e2e.invariant import TERMINAL, assert_run_truth
from tests.e2e.test_api_server_validation import VALID, create
from tests.harness.fixtures import Cluster
from tests.harness.triton_server import TritonHandle

CENTER, WIDTH = 40.0, 400.0
EXAMPLE = Path(__file__).parents[2] / "examples" / "ct-series.yaml"


def test_series_predictions_keyed_by_uid_and_grouped_per_study(
    operator_process: OperatorProcess,
    triton_server: TritonHandle,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "dicom"
    # Patient A: two studies a year apart (longitudinal), patient B: one; one CT series each
    # per study, plus a localizer of another size; a series with a missing slice; a CR image
    # (not selected: Modality CR) and a stray text file.
    studies = {"A": [generate_uid(), generate_uid()], "B": [generate_uid()]}
    expected: dict[str, dict[str, object]] = {}
    for patient, uids in studies.items():
        for s, study in enumerate(uids):
            for k, slices in enumerate((4, 3)):
                _, series, made = write_ct_series(
                    data / f"{patient}{s}{k}",
                    slices=slices,
                    study=study,
                    patient=f"PATIENT-{patient}",
                    z0=-50.0 * k,
                )
                hu = np.stack([m.hu for m in made])
                windowed = np.clip((hu - (CENTER - WIDTH / 2)) / WIDTH, 0, 1)
                expected[series] = {"study": study, "slices": slices, "mean": windowed.mean()}
    _, gap, _ = write_ct_series(data / "gap", slices=5, skip=(2,), patient="PATIENT-B")
    write_monochrome1(data / "cr.dcm")
    (data / "README.txt").write_text("not an image\n")
    output = tmp_path / "out"
    bp = batch_prediction(
        "ct-series",
        triton_server,
        data,
        output,
        model={"name": "volume_stats", "inputs": [{"name": "volume", "field": "$item"}]},
        input={
            "uri": str(data),
            "format": "dicom",
            "dicom": {
                "granularity": "series",
                "select": {"modality": ["CT"]},
                "pixels": {"window": {"center": CENTER, "width": WIDTH}},
                "pseudonymizePatientId": True,
            },
        },
        shards=3,
        parallelism=2,
        retry={"maxRounds": 0},
    )
    bp["spec"]["output"]["includeFields"] = [
        "StudyInstanceUID",
        "PatientID",
        "StudyDate",
        "SeriesDescription",
    ]
    cluster.apply(bp, namespace)
    status = wait_for_phase(
        cluster,
        name="ct-series",
        namespace=namespace,
        phases=TERMINAL,
        timeout=240,
        operator=operator_process,
    )["status"]
    assert status["phase"] == "PartiallySucceeded", status
    ids = {*expected, gap, "README.txt"}
    assert_run_truth(cluster, "ct-series", namespace, output, ids)

    predictions = [
        json.loads(line)
        for path in sorted((output / "rounds").rglob("predictions-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert {p["id"] for p in predictions} == set(expected)
    per_study: dict[str, set[str]] = defaultdict(set)
    patients: dict[str, set[str]] = defaultdict(set)
    for p in predictions:
        want = expected[p["id"]]
        assert p["StudyInstanceUID"] == want["study"]
        assert p["slices"] == want["slices"], p
        assert abs(p["mean"] - float(want["mean"])) < 1e-4, p  # type: ignore[arg-type]
        assert p["StudyDate"] == "20260102"
        assert p["SeriesDescription"] == "AXIAL CHEST"
        assert p["PatientID"].startswith("anon-"), "the pseudonym, never the real PatientID"
        per_study[p["StudyInstanceUID"]].add(p["id"])
        patients[p["PatientID"]].add(p["StudyInstanceUID"])
    assert {study: len(series) for study, series in per_study.items()} == dict.fromkeys(
        [*studies["A"], *studies["B"]], 2
    )
    # Patient A's two studies group under one pseudonym: longitudinal results stay together.
    assert sorted(len(s) for s in patients.values()) == [1, 2]

    failures = {
        f["id"]: f for f in map(json.loads, (output / "failures.jsonl").read_text().splitlines())
    }
    assert failures[gap]["code"] == "INCOMPLETE_SERIES"
    assert "missing slices" in failures[gap]["message"]
    assert failures["README.txt"]["code"] == "UNREADABLE_ITEM"
    assert failures["README.txt"]["message"] == "README.txt: not a DICOM file"
    shown = {
        i["id"]: i["code"] for i in get_bp(cluster, "ct-series", namespace)["status"]["failedItems"]
    }
    assert shown == {gap: "INCOMPLETE_SERIES", "README.txt": "UNREADABLE_ITEM"}
    # The plan stored its header index beside plan.json: every shard numbers items from it.
    plan = json.loads((output / "plan.json").read_text())
    assert plan["total"] == len(ids)
    assert (output / "dicom-index.json").exists()


@pytest.mark.parametrize(
    ("dicom", "expected"),
    [
        ({"sliceRange": [5, 2]}, "dicom.sliceRange: [start, stop) needs start < stop"),
        ({"pixels": {"window": {"width": 400}}}, "window: set center and width, or fromFile"),
        ({"granularity": "study"}, 'spec.input.dicom.granularity: Unsupported value: "study"'),
    ],
)
def test_the_api_server_refuses_impossible_dicom_settings(
    installed_crds: Cluster, namespace: str, dicom: dict[str, object], expected: str
) -> None:
    body = copy.deepcopy(VALID)
    body["spec"]["input"] = {"uri": "/data/ct/", "format": "dicom", "dicom": dicom}
    assert expected in create(installed_crds, body, namespace)
    body["spec"]["input"] = {"uri": "/data/in.jsonl", "format": "jsonl", "dicom": {}}
    assert "input.dicom: only with format: dicom" in create(installed_crds, body, namespace)


def test_the_ct_series_example_is_accepted(installed_crds: Cluster, namespace: str) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    example["spec"]["suspend"] = True  # admission only
    assert create(installed_crds, example, namespace) == ""
    stored = installed_crds.get("bp", example["metadata"]["name"], namespace)
    assert stored["spec"]["input"]["dicom"]["pixels"]["invertMonochrome1"] is True  # default
