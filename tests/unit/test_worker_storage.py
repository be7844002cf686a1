"""A URI no installed fsspec driver can open stops the worker with a message naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchpredict.worker import exit_codes
from batchpredict.worker.main import run
from tests.triton.support import worker_env


@pytest.mark.parametrize(
    ("input_uri", "output_uri", "expected"),
    [
        (
            "abfs://container/data.parquet",
            None,
            "spec.input.uri: cannot open abfs://container/data.parquet: Install adlfs",
        ),
        ("data.parquet", "nosuch://bucket/out", "spec.output.uri: cannot open nosuch://bucket/out"),
    ],
)
def test_a_store_without_a_driver_cannot_start_and_names_the_field(
    tmp_path: Path, input_uri: str, output_uri: str | None, expected: str
) -> None:
    spec = {
        "model": {"name": "double"},
        "triton": {"url": "localhost:1"},
        "input": {"uri": input_uri, "format": "parquet"},
        "output": {"uri": output_uri or str(tmp_path / "out")},
    }
    assert run("plan", worker_env(spec, tmp_path)) == exit_codes.CANNOT_START
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["reason"] == "InvalidSpec"
    assert expected in message["message"]
