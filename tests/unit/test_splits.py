"""Byte-range splits: every line in exactly one split, whatever the cut points; a dataset read
split by split holds the same items as read whole, with stable, unique ids."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from batchpredict.api.v1alpha1.data import InputFormat, InputSpec, Select
from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.io.readers import Dataset
from batchpredict.io.splits import SPLIT_STRIDE, ByteSplit, plan_byte_splits, split_bytes
from batchpredict.planning import ShardPlan, plan_byte_shards

CONTENTS = {
    "plain": b'{"a": 1}\n{"a": 22}\n{"a": 333}\n',
    "crlf": b'{"a": 1}\r\n{"a": 22}\r\n\r\n{"a": 333}\r\n',
    "empty lines": b'\n\n{"a": 1}\n\n\n{"a": 22}\n\n',
    "no final newline": b'{"a": 1}\n{"a": 22}\n{"a": 333}',
    "one long line": b'{"a": "' + b"x" * 300 + b'"}\n{"b": 2}\n',
    "tiny": b"{}",
    "just a newline": b"\n",
    "empty": b"",
}


def lines_of(data: bytes) -> list[bytes]:
    """The lines of `data` (each with its `\\n`), as the splits must share them out."""
    return data.splitlines(keepends=True) if b"\r" not in data else _split_lf(data)


def _split_lf(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    out = [p + b"\n" for p in parts[:-1]]
    return out + ([parts[-1]] if parts[-1] else [])


def cut(data: bytes, size: int) -> list[bytes]:
    """What split_bytes gives for every split of `size` bytes."""
    return [
        b"".join(split_bytes(io.BytesIO(data), start, min(start + size, len(data))))
        for start in range(0, len(data), size)
    ]


@pytest.mark.parametrize("name", sorted(CONTENTS))
def test_every_line_belongs_to_exactly_one_split_for_every_split_size(name: str) -> None:
    data = CONTENTS[name]
    for size in range(1, len(data) + 2):
        parts = cut(data, size)
        assert b"".join(parts) == data, (name, size)
        first = 0  # where each split's bytes begin (they add up to the file)
        for start, part in zip(range(0, len(data), size), parts, strict=True):
            if part:
                # A split's bytes start at a line start inside it and end at a line end.
                assert first == 0 or data[first - 1 : first] == b"\n", (name, size, start)
                assert start <= first < start + size, "a split owns the lines starting in it"
                assert part.endswith(b"\n") or first + len(part) == len(data)
            first += len(part)


def test_a_split_inside_a_long_line_owns_nothing() -> None:
    data = CONTENTS["one long line"]
    assert b"".join(split_bytes(io.BytesIO(data), 100, 200)) == b""
    # The line that started before it runs past its end, into the split that owns it.
    assert b"".join(split_bytes(io.BytesIO(data), 0, 100)) == data.split(b"\n")[0] + b"\n"
    assert b"".join(split_bytes(io.BytesIO(data), 200, len(data))) == b'{"b": 2}\n'


def test_a_split_reads_past_its_end_in_small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchpredict.io import splits  # noqa: PLC0415

    monkeypatch.setattr(splits, "_READ_BYTES", 3)
    data = b"abcdefgh\nij\nklmnopqrstu\nv"
    for size in range(1, len(data) + 1):
        assert b"".join(cut(data, size)) == data


def test_byte_splits_plan_from_sizes_alone() -> None:
    files = [("d/a.jsonl", 100), ("d/b.jsonl.gz", 5000), ("d/c.jsonl", 0), ("d/e.jsonl", 300)]
    splits = plan_byte_splits(files, wanted=5)
    # The compressed file is one whole split; 400 plain bytes into 4 splits of 100.
    assert splits == [
        ByteSplit("d/a.jsonl", 0, 100),
        ByteSplit("d/b.jsonl.gz", 0, None),
        ByteSplit("d/e.jsonl", 0, 100),
        ByteSplit("d/e.jsonl", 100, 200),
        ByteSplit("d/e.jsonl", 200, 300),
    ]
    many = plan_byte_splits([(f"f{i}.jsonl", 10) for i in range(1000)], wanted=8)
    assert len(many) == 1000, "a file is never merged with another"
    assert plan_byte_splits([("a.csv", 10)], wanted=50) == [
        ByteSplit("a.csv", n, n + 1) for n in range(10)
    ]


def test_a_byte_range_plan_round_trips_and_learns_its_total() -> None:
    spec = BatchPredictionSpec.model_validate(
        {
            "model": {"name": "m"},
            "triton": {"url": "grpc://t:8001"},
            "input": {"uri": "/d", "format": "jsonl"},
            "output": {"uri": "/o"},
            "shards": 3,
        }
    )
    plan = plan_byte_shards([("/d/a.jsonl", 90)], spec, chunk_items=7)
    assert plan.shards == 3 and plan.total_items is None and plan.by_bytes
    wire = {**plan.to_wire(), "splits": plan.splits_to_wire()}
    again = ShardPlan.from_wire(json.loads(json.dumps(wire)))
    assert again == plan
    assert again.shard_size(1) is None
    with pytest.raises(ValueError, match="not counted"):
        again.shard_range(1)
    partly = again.with_sizes({1: 5})
    assert partly.shard_range(1) == range(SPLIT_STRIDE, SPLIT_STRIDE + 5)
    assert partly.shard_of(SPLIT_STRIDE + 4) == 1
    assert partly.total_items is None
    assert partly.with_sizes({0: 2, 2: 0}).total_items == 7


def write_jsonl(path: Path, rows: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(rows) + newline, newline="")
    return path


def read_all(dataset: Dataset, splits: list[ByteSplit]) -> list[tuple[str, object]]:
    """(id, row or error) of every item, split by split, checking each split's count."""
    items: list[tuple[str, object]] = []
    for shard, split in enumerate(splits):
        base = shard * SPLIT_STRIDE
        got = []
        for batch in dataset.iter_items(base, split=(split, base)):
            rows = batch.table.to_pylist() if batch.table is not None else batch.rows or []
            for i in range(len(batch)):
                error = batch.errors.get(i)
                got.append((batch.id_at(i), error[1] if error else rows[i]))
            assert list(batch.positions) == list(
                range(base + len(got) - len(batch), base + len(got))
            )
        assert dataset.count_split(split) == len(got), split
        items += got
    return items


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_jsonl_split_by_bytes_holds_every_row_once(tmp_path: Path, newline: str) -> None:
    rows = [json.dumps({"id": f"r{n}", "x": n}) for n in range(60)]
    rows[17] = "{not json"
    rows[30] = ""  # a blank line: no item
    path = write_jsonl(tmp_path / "a.jsonl", rows, newline)
    spec = InputSpec(uri=str(path), format=InputFormat.JSONL, id_field="id")
    whole = [
        (b.id_at(i), b.errors.get(i)) for b in Dataset(spec).iter_items() for i in range(len(b))
    ]
    size = path.stat().st_size
    for wanted in (1, 2, 7, 25, size):
        splits = plan_byte_splits([(str(path), size)], wanted)
        items = read_all(Dataset(spec), splits)
        assert len(items) == len(whole) == 59
        ids = [i for i, _ in items]
        assert len(set(ids)) == len(ids)
        assert [i for i in ids if i.startswith("r")] == [
            f"r{n}" for n in range(60) if n not in {17, 30}
        ]
        malformed = [(i, e) for i, e in items if isinstance(e, str)]
        assert len(malformed) == 1, malformed
        # Its id: the range it starts in and its row there; its message: where it is.
        owner = next(
            s for s in splits if s.start <= path.read_bytes().index(b"{not") < (s.end or 0)
        )
        assert malformed[0][0].startswith(f"a.jsonl:{owner.start}+")
        assert "is not valid JSON" in malformed[0][1]
        assert "a.jsonl" in malformed[0][1]


def test_csv_split_by_bytes_keeps_the_header_and_fails_a_bad_row_alone(tmp_path: Path) -> None:
    lines = ["id,x,y"] + [f"r{n},{n},{n * 2}" for n in range(40)]
    lines[11] = "r10,only-two"  # a row with too few fields
    lines[25] = ""
    path = tmp_path / "t.csv"
    path.write_text("\r\n".join(lines) + "\r\n", newline="")
    spec = InputSpec(uri=str(path), format=InputFormat.CSV)
    size = path.stat().st_size
    for wanted in (1, 3, 16, size):
        splits = plan_byte_splits([(str(path), size)], wanted)
        items = read_all(Dataset(spec), splits)
        rows = [r for _, r in items if isinstance(r, dict)]
        assert all(set(r) == {"id", "x", "y"} for r in rows), "every range reads the header"
        assert [r["id"] for r in rows] == [f"r{n}" for n in range(40) if n not in {10, 24}]
        errors = [e for _, e in items if isinstance(e, str)]
        assert len(errors) == 1 and "has 2 fields, the header has 3" in errors[0]
        ids = [i for i, _ in items]
        assert len(set(ids)) == len(ids) == 39
        assert all(i.startswith("t.csv:") for i in ids)


def test_compressed_and_many_files_and_where(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for f in range(5):
        write_jsonl(
            data / f"p{f}.jsonl", [json.dumps({"id": f"{f}-{n}", "k": n % 2}) for n in range(f * 3)]
        )
    with gzip.open(data / "z.jsonl.gz", "wt") as out:
        out.write("".join(json.dumps({"id": f"z-{n}", "k": n % 2}) + "\n" for n in range(9)))
    spec = InputSpec(uri=str(data), format=InputFormat.JSONL, id_field="id")
    dataset = Dataset(spec)
    splits = plan_byte_splits(dataset.file_sizes(), 6)
    assert ByteSplit(str(data / "z.jsonl.gz"), 0, None) in splits
    ids = [i for i, _ in read_all(dataset, splits)]
    assert sorted(ids) == sorted(
        [f"{f}-{n}" for f in range(5) for n in range(f * 3)] + [f"z-{n}" for n in range(9)]
    )
    kept = InputSpec(
        uri=str(data), format=InputFormat.JSONL, id_field="id", select=Select(where={"k": "1"})
    )
    odd = [i for i, _ in read_all(Dataset(kept), splits)]
    assert sorted(odd) == sorted(i for i in ids if int(i.split("-")[1]) % 2)


def test_a_retry_reads_only_the_wanted_positions_of_its_range(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps({"x": n}) for n in range(50)])
    dataset = Dataset(InputSpec(uri=str(path), format=InputFormat.JSONL))
    splits = plan_byte_splits([(str(path), path.stat().st_size)], 3)
    base = 1 * SPLIT_STRIDE
    import numpy as np  # noqa: PLC0415

    wanted = np.array([base + 2, base + 5], dtype=np.int64)
    batches = list(dataset.iter_items(base + 2, base + 6, wanted=wanted, split=(splits[1], base)))
    got = [(int(p), b.id_at(i)) for b in batches for i, p in enumerate(b.positions)]
    assert got == [
        (base + 2, f"a.jsonl:{splits[1].start}+2"),
        (base + 5, f"a.jsonl:{splits[1].start}+5"),
    ]


@pytest.mark.parametrize(
    "input_",
    [
        {"uri": "/d", "format": "parquet", "byteRanges": True},
        {"uri": "/d", "format": "jsonl", "byteRanges": True, "select": {"limit": 10}},
    ],
)
def test_byte_ranges_only_for_text_without_a_limit(input_: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="byteRanges: only for jsonl and csv"):
        InputSpec.model_validate(input_)
