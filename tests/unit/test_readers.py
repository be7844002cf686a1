"""Dataset readers: ids, positions, select, malformed rows, streaming ranges."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict.api.v1alpha1.data import InputSpec
from batchpredict.io import csvblocks, jsonlblocks, textblocks
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


# ---------------------------------------------------------------- text formats through Arrow


def rows_of(dataset_batches: list[ItemBatch]) -> list[tuple[int, str, str | None]]:
    """(position, id, error message) of every item."""
    return [
        (int(p), b.id_at(i), b.errors[i][1] if i in b.errors else None)
        for b in dataset_batches
        for i, p in enumerate(b.positions)
    ]


def python_reference(
    path: Path, fmt: str, id_field: str | None
) -> list[tuple[int, str, str | None]]:
    """What the worker read before Arrow: Python's json/csv, row by row."""
    data = path.read_bytes()
    if fmt == "jsonl":
        parsed = list(jsonlblocks._jsonl_rows(data, 0))
    else:
        text = data.decode()
        header = next(csv.reader(io.StringIO(text, newline="")))
        reader = csv.reader(io.StringIO(text, newline=""))
        next(reader)
        parsed = list(csvblocks._csv_reader_rows(reader, header, 0))
    out = []
    for number, (row, error) in enumerate(parsed):
        value = row.get(id_field) if row and id_field else None
        out.append((number, str(number) if value is None else str(value), error and error[1]))
    return out


def messy_lines(fmt: str, n: int, seed: int) -> str:
    """Valid rows with, here and there, every kind of line Python and Arrow might disagree on."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    odd_jsonl = [
        '{"id": "t", "x": ',
        "",
        "   ",
        "[1, 2]",
        '{"x": 1} {"x": 2}',
        '{"id": 7, "x": 1}',
        '{"id": 1.0, "x": 2}',
        '{"id": null, "x": 3}',
        '{"x": "text"}',
        '{"x": NaN}',
        "\x0c",
        '{"x": "\u00e9"}',
        '{"x": 1}\r{"x": 2}',
    ]
    odd_csv = ["a,1,extra", "", " ", '"q,uoted",2', '"multi\nline",3', 'x"y,4', '"a""b",5']
    odd_csv += ["\u00e9,1", "r\r1,2", "\x0c"]
    lines = []
    for i in range(n):
        odd = odd_jsonl if fmt == "jsonl" else odd_csv
        if rng.random() < 0.03:
            lines.append(rng.choice(odd))
        elif fmt == "jsonl":
            lines.append(json.dumps({"id": f"r{i}", "x": [rng.random(), float(i)], "g": i % 3}))
        else:
            lines.append(f"r{i},{i}.5")
    return ("id,x\n" if fmt == "csv" else "") + "\n".join(lines) + "\n"


@pytest.fixture
def arrow_threads() -> Iterator[None]:
    """Arrow's pool with 3 threads (blocks parsed in parts), whatever this machine has."""
    before = pa.cpu_count()
    pa.set_cpu_count(3)
    yield
    pa.set_cpu_count(before)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("block_bytes", [50, 4096, 1 << 20, "parallel"])
def test_arrow_blocks_read_every_row_as_python_would(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arrow_threads: None,
    fmt: str,
    block_bytes: int | str,
) -> None:
    if block_bytes == "parallel":  # each block parsed in parts by Arrow's threads
        monkeypatch.setattr(textblocks, "PARALLEL_BYTES", 2000)
        block_bytes = 30_000
    assert isinstance(block_bytes, int)
    monkeypatch.setattr(textblocks, "BLOCK_BYTES", block_bytes)
    for seed in range(4):
        path = tmp_path / f"in-{seed}.{fmt}"
        # Tiny blocks cut almost every line apart (Arrow costs ~1 ms a call): fewer lines.
        path.write_text(messy_lines(fmt, 300 if block_bytes < 100 else 1500, seed))
        for id_field in (None, "id"):
            dataset = open_dataset(InputSpec(uri=str(path), format=fmt, id_field=id_field))
            got = rows_of(list(dataset.iter_items(batch_rows=100)))
            assert got == python_reference(path, fmt, id_field), (seed, id_field)
            assert dataset.count() == len(got)
            dataset.keep_only({"x"})  # a shard that converts only the fields it uses
            assert rows_of(list(dataset.iter_items(batch_rows=100))) == got
            dataset.keep_only(None)
            # A shard further on counts the rows before it (not parsed), then reads the same.
            for start in (1, len(got) // 3, len(got) - 7) if seed < 2 else ():
                shard = rows_of(list(dataset.iter_items(start, start + 40, batch_rows=16)))
                assert shard == got[start : start + 40], (seed, id_field, start)


def test_jsonl_converts_only_kept_fields_once_typed_and_never_drops_one() -> None:
    lines = [json.dumps({"id": i, "x": i, "big": [i] * 50}) for i in range(300)]
    lines[150] = json.dumps({"id": 150, "x": 1.5, "late": "here"})  # x changes type
    lines += [json.dumps({"id": i, "x": i, "late": "now"}) for i in range(300, 400)]
    data = ("\n".join(lines) + "\n").encode()
    keep = frozenset({"id", "x", "late"})
    blocks = list(jsonlblocks.jsonl_blocks(io.BytesIO(data), block_bytes=2000, keep=keep))
    tables = [b.table for b in blocks]
    assert all(t is not None for t in tables)
    x = [v for t in tables if t is not None for v in t.column("x").to_pylist()]
    assert x == [float(i) if i != 150 else 1.5 for i in range(400)]
    late = [
        v
        for t in tables
        if t is not None
        for v in (t.column("late").to_pylist() if "late" in t.column_names else [None] * len(t))
    ]
    assert late == [None] * 150 + ["here"] + [None] * 149 + ["now"] * 100
    # Blocks after the fields were all typed carry only those: `big` is not converted.
    last = tables[-1]
    assert last is not None
    assert "big" not in last.column_names


def test_rows_before_a_shard_are_counted_not_parsed() -> None:
    lines = b"".join(b'{"x": %d}\n' % i for i in range(1000))
    blocks = list(jsonlblocks.jsonl_blocks(io.BytesIO(lines), block_bytes=500, count_before=900))
    counted = [b.counted for b in blocks if b.counted is not None]
    parsed = [b for b in blocks if b.counted is None]
    assert sum(counted) + sum(b.num_rows for b in parsed) == 1000
    assert 850 < sum(counted) <= 900  # every whole block before row 900
    assert parsed[0].table is not None
    first_parsed = sum(counted)
    assert parsed[0].table.column("x")[0].as_py() == first_parsed
    csv_lines = b"x\n" + b"".join(b"%d\n" % i for i in range(1000))
    csv_counted = [
        b.counted
        for b in csvblocks.csv_blocks(io.BytesIO(csv_lines), block_bytes=300, count_before=500)
        if b.counted is not None
    ]
    assert 400 < sum(csv_counted) <= 500


def test_clean_text_comes_as_arrow_batches_and_a_bad_row_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(textblocks, "BLOCK_BYTES", 1000)
    lines = [json.dumps({"id": f"r{i}", "x": [float(i)] * 4}) for i in range(500)]
    lines[321] = '{"id": "r321", "x": [1, 2'
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dataset = open_dataset(InputSpec(uri=str(path), format="jsonl", id_field="id"))
    batches = list(dataset.iter_items(batch_rows=64))
    got = rows_of(batches)
    assert [i for _, i, _ in got] == [f"r{i}" if i != 321 else "321" for i in range(500)]
    failed = [(p, m) for p, _, m in got if m]
    assert len(failed) == 1
    assert failed[0][0] == 321
    assert str(failed[0][1]).startswith("line 322 is not valid JSON")
    # Only the block around the bad line went row by row: the rest are Arrow batches.
    python_items = sum(len(b) for b in batches if b.table is None)
    assert 0 < python_items < 30
    table = next(b.table for b in batches if b.table is not None)
    assert table.column("x").type == pa.list_(pa.float64())


def test_csv_values_stay_text_and_where_compares_text(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('"id","x","g"\n007,1.50,a\n008,2,b\n009,x,a\n')  # a quoted header
    spec = InputSpec(uri=str(path), format="csv", id_field="id", select={"where": {"g": "a"}})
    dataset = open_dataset(spec)
    (batch,) = list(dataset.iter_items())
    assert [batch.id_at(i) for i in range(len(batch))] == ["007", "009"]
    assert batch.table is not None  # read by Arrow
    assert batch.table.column("x").to_pylist() == ["1.50", "x"]
    assert dataset.fields() == ["id", "x", "g"]


def test_jsonl_ids_and_where_are_python_text_of_the_values(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    rows = [{"id": 1.0, "ok": True}, {"id": 2, "ok": False}, {"ok": True}, {"id": None, "ok": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok = open_dataset(
        InputSpec(uri=str(path), format="jsonl", id_field="id", select={"where": {"ok": "True"}})
    )
    assert items(list(ok.iter_items())) == [(0, "1.0"), (1, "2")]
    none = open_dataset(InputSpec(uri=str(path), format="jsonl", select={"where": {"ok": "None"}}))
    assert items(list(none.iter_items())) == [(0, "3")]


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress),
        # gzip members one after another (as `cat a.gz b.gz` and parallel gzip tools write)
        (
            ".gz",
            lambda data: b"".join(
                gzip.compress(data[i : i + 999]) for i in range(0, len(data), 999)
            ),
        ),
        (".bz2", bz2.compress),
        (".zst", lambda data: pa.compress(data, "zstd", asbytes=True)),
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_compressed_inputs_read_like_plain_ones(
    tmp_path: Path, fmt: str, suffix: str, compress: Any
) -> None:
    text = messy_lines(fmt, 800, seed=1)
    plain = tmp_path / f"plain.{fmt}"
    plain.write_text(text)
    (tmp_path / "dir").mkdir()
    packed = tmp_path / "dir" / f"part.{fmt}{suffix}"
    packed.write_bytes(compress(text.encode()))
    (tmp_path / "dir" / "notes.txt").write_text("not data")
    expected = rows_of(list(open_dataset(InputSpec(uri=str(plain), format=fmt)).iter_items()))
    for uri in (packed, tmp_path / "dir"):  # one file, and a directory that holds it
        dataset = open_dataset(InputSpec(uri=str(uri), format=fmt))
        assert rows_of(list(dataset.iter_items())) == expected
        assert dataset.fields() == ["id", "x"] if fmt == "csv" else ["id", "x", "g"]
