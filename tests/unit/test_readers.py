"""Dataset readers: ids, positions, select, malformed rows, streaming ranges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict.api.v1alpha1.data import InputSpec
from batchpredict.io.readers import MALFORMED, DatasetNotFoundError, ItemBatch, open_dataset


def items(batches: list[ItemBatch]) -> list[tuple[int, str]]:
    return [(int(p), b.id_at(i)) for b in batches for i, p in enumerate(b.positions)]


def test_jsonl_ids_default_to_row_numbers_and_bad_lines_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"x": 1}\n{"x": \n\n[1, 2]\n{"x": 4}\n')
    dataset = open_dataset(InputSpec(uri=str(path), format="jsonl"))
    batches = list(dataset.iter_items(batch_rows=2))
    assert items(batches) == [(0, "0"), (1, "1"), (2, "2"), (3, "3")]
    errors = {int(b.positions[i]): e for b in batches for i, e in b.errors.items()}
    assert errors[1] == (MALFORMED, errors[1][1])
    assert "line 2 is not valid JSON" in errors[1][1]
    assert errors[2][1] == "line 4 is not a JSON object"
    assert dataset.count() == 4


def test_csv_rows_with_the_wrong_number_of_fields_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,x\na,1\nb,2,3\nc,3\n")
    dataset = open_dataset(InputSpec(uri=str(path), format="csv", id_field="id"))
    (batch,) = list(dataset.iter_items())
    assert [batch.id_at(i) for i in range(3)] == ["a", "1", "c"]
    assert batch.errors == {1: (MALFORMED, "line 3 has 3 fields, the header has 2")}
    assert batch.rows is not None
    assert batch.rows[2] == {"id": "c", "x": "3"}


def test_parquet_streams_ranges_with_where_limit_and_ids(tmp_path: Path) -> None:
    n = 10_000
    table = pa.table(
        {"key": [f"k{i}" for i in range(n)], "x": np.arange(n), "odd": np.arange(n) % 2}
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=1000)
    spec = InputSpec(uri=str(tmp_path / "in.parquet"), format="parquet", id_field="key")
    dataset = open_dataset(spec)
    assert dataset.count() == n
    got = items(list(dataset.iter_items(2500, 2600, batch_rows=64)))
    assert got == [(p, f"k{p}") for p in range(2500, 2600)]
    wanted = np.array([3, 4999, 9999])
    assert items(list(dataset.iter_items(0, n, wanted=wanted))) == [
        (3, "k3"),
        (4999, "k4999"),
        (9999, "k9999"),
    ]
    odd = open_dataset(
        InputSpec.model_validate({**spec.to_wire(), "select": {"where": {"odd": "1"}, "limit": 50}})
    )
    assert odd.count() == 50
    kept = items(list(odd.iter_items(10, None)))
    assert kept == [(p, f"k{2 * p + 1}") for p in range(10, 50)]  # ids stay the row's


def test_files_are_sorted_relative_paths_filtered_by_glob(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "sub/c.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    dataset = open_dataset(InputSpec(uri=str(tmp_path), format="files", select={"glob": "*.png"}))
    assert [b.id_at(i) for b in dataset.iter_items() for i in range(len(b))] == [
        "a.png",
        "b.png",
        "sub/c.png",
    ]


def test_missing_dataset_names_the_uri(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nothing\.jsonl does not exist"):
        open_dataset(InputSpec(uri=str(tmp_path / "nothing.jsonl"), format="jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no parquet files under"):
        open_dataset(InputSpec(uri=str(tmp_path / "empty"), format="parquet"))


def test_multi_file_jsonl_numbers_rows_across_files(tmp_path: Path) -> None:
    for part, values in (("p1.jsonl", [1, 2]), ("p2.jsonl", [3])):
        (tmp_path / part).write_text("".join(json.dumps({"x": v}) + "\n" for v in values))
    dataset = open_dataset(InputSpec(uri=str(tmp_path / "*.jsonl"), format="jsonl"))
    assert items(list(dataset.iter_items())) == [(0, "0"), (1, "1"), (2, "2")]
