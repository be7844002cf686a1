"""Pure pieces of the worker: tensor mapping, preprocessing, postprocessing, error classes."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tritonclient.grpc as grpc_client
from PIL import Image
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from batchpredict.api.v1alpha1.data import ImagePreprocess, InputSpec, Preprocess
from batchpredict.api.v1alpha1.serving import ModelRef, Postprocess
from batchpredict.io.readers import ItemBatch, open_dataset
from batchpredict.triton.client import ModelInfo, TensorMeta, encode_request
from batchpredict.triton.errors import classify
from batchpredict.triton.tensors import (
    ITEM_FIELD,
    InputBinding,
    MappingError,
    OutputBinding,
    auto_batch_size,
    bind_inputs,
)
from batchpredict.worker.pipeline import read_rows
from batchpredict.worker.plan import cannot_write_there
from batchpredict.worker.postprocess import output_columns
from batchpredict.worker.preprocess import ItemError, Preprocessor, decode_image

INFO = ModelInfo("m", "1", [TensorMeta("x", "FP32", [2])], [TensorMeta("y", "FP32", [3])], 64)


def test_single_input_binds_to_the_only_data_field_or_says_what_to_set() -> None:
    assert bind_inputs(ModelRef(name="m"), INFO, ["features"])[0].field == "features"
    assert bind_inputs(ModelRef(name="m"), INFO, ["x", "id"])[0].field == "x"
    with pytest.raises(MappingError, match=r"which of the fields \['a', 'b'\] feeds input 'x'"):
        bind_inputs(ModelRef(name="m"), INFO, ["a", "b"])
    with pytest.raises(MappingError, match="has no input 'z'"):
        bind_inputs(ModelRef.model_validate({"name": "m", "inputs": [{"name": "z"}]}), INFO, [])


def test_auto_batch_size_respects_max_batch_size_and_bytes() -> None:
    small = [InputBinding("x", "x", "FP32", (2,))]
    assert auto_batch_size(INFO, small, None) == 64
    assert auto_batch_size(INFO, small, 1000) == 64
    image = [InputBinding("x", "x", "FP32", (3, 1024, 1024))]
    big = ModelInfo("m", "1", [], [], 4096)
    assert auto_batch_size(big, image, None) == 2  # 32 MiB / 12 MiB per item
    assert auto_batch_size(big, image, 1000) == 85  # asked for: within 1 GiB per request


def test_columnar_batch_falls_back_per_item_for_a_bad_row() -> None:
    table = pa.record_batch({"x": pa.array([[1.0, 2.0], None, [5.0, 6.0]])})
    batch = ItemBatch(np.arange(3), pa.array(["a", "b", "c"]), table=table)
    pre = Preprocessor([InputBinding("x", "x", "FP32", (2,))], None, [], batch_size=8)
    prepared = pre.prepare(batch)
    assert list(prepared.errors) == [1]
    assert prepared.errors[1] == ("MALFORMED_ITEM", "field 'x' is null or missing")
    (request,) = prepared.requests
    assert request.indices.tolist() == [0, 2]
    assert request.tensors["x"].tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_requests_never_exceed_the_batch_size() -> None:
    table = pa.record_batch({"x": pa.array(np.arange(10, dtype=np.float32))})
    batch = ItemBatch(np.arange(10), pa.array([str(i) for i in range(10)]), table=table)
    pre = Preprocessor([InputBinding("x", "x", "FP32", (1,))], None, [], batch_size=4)
    sizes = [len(r.indices) for r in pre.prepare(batch).requests]
    assert sizes == [4, 4, 2]


def test_image_decode_resizes_normalizes_and_reports_corrupt_data() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 20), (255, 0, 0)).save(buffer, format="PNG")
    spec = ImagePreprocess(resize=[4, 6], channels_first=True)
    array = decode_image(buffer.getvalue(), spec, "red.png")
    assert array.shape == (3, 4, 6)
    assert array[0].max() == pytest.approx(1.0)
    with pytest.raises(ItemError, match=r"cannot decode image bad\.png"):
        decode_image(b"not an image", spec, "bad.png")


def test_postprocessing_keeps_argmax_and_topk() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], dtype=np.float32)
    columns = output_columns(
        [
            OutputBinding("s", "raw"),
            OutputBinding("s", "label", Postprocess.ARGMAX),
            OutputBinding("s", "top", Postprocess.TOPK, k=2),
        ],
        {"s": scores},
        2,
    )
    assert columns["label"].to_pylist() == [1, 0]
    assert columns["top"].to_pylist() == [[1, 2], [0, 2]]
    top_scores = [s for row in columns["top_scores"].to_pylist() for s in row]
    assert top_scores == pytest.approx([0.7, 0.2, 0.5, 0.4])
    assert columns["raw"].to_pylist()[0] == pytest.approx([0.1, 0.7, 0.2])


@pytest.mark.parametrize(("classes", "k"), [(10, 3), (6, 6), (200, 5), (200, 20)])
def test_topk_is_the_k_best_classes_in_order_whatever_the_path(classes: int, k: int) -> None:
    rng = np.random.default_rng(classes * k)
    scores = rng.random((500, classes)).astype(np.float32)
    columns = output_columns([OutputBinding("s", "top", Postprocess.TOPK, k=k)], {"s": scores}, 500)
    top = np.array(columns["top"].to_pylist())
    assert (top == np.argsort(-scores, axis=1, kind="stable")[:, :k]).all()
    # Tied scores keep the lower class first; a NaN row still gives k distinct classes.
    ties = np.array([[0.5, 0.9, 0.5, 0.9]], dtype=np.float32)
    tied = output_columns([OutputBinding("s", "t", Postprocess.TOPK, k=3)], {"s": ties}, 1)
    assert tied["t"].to_pylist() == [[1, 3, 0]]
    ties[0, 0] = np.nan
    with_nan = output_columns([OutputBinding("s", "t", Postprocess.TOPK, k=3)], {"s": ties}, 1)
    assert len(set(with_nan["t"].to_pylist()[0])) == 3


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        ("StatusCode.UNAVAILABLE", "UNAVAILABLE", True),
        ("StatusCode.INVALID_ARGUMENT", "INVALID_ARGUMENT", False),
        ("503", "UNAVAILABLE", True),
        ("400", "INVALID_ARGUMENT", False),
        ("429", "RESOURCE_EXHAUSTED", True),
    ],
)
def test_errors_are_classified_by_code(status: str, code: str, transient: bool) -> None:
    error = classify(InferenceServerException("boom", status=status))
    assert (error.code, error.transient, error.message) == (code, transient, "boom")


def test_connection_errors_and_timeouts_are_transient() -> None:
    assert classify(ConnectionResetError("reset")).transient
    assert classify(TimeoutError()).code == "DEADLINE_EXCEEDED"


def test_user_preprocess_function_feeds_tensors_and_its_errors_fail_the_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "userprep.py").write_text(
        "def scale(item):\n"
        "    if item['v'] < 0:\n"
        "        raise ValueError('negative v')\n"
        "    return {'x': [item['v'] * 10.0]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preprocess = Preprocess(function="userprep:scale")
    pre = Preprocessor([InputBinding("x", "x", "FP32", (1,))], preprocess, ["v"], batch_size=8)
    rows: list[dict[str, object] | None] = [{"v": 1.0}, {"v": -1.0}, {"v": 2.5}]
    prepared = pre.prepare(ItemBatch(np.arange(3), pa.array(["a", "b", "c"]), rows=rows))
    assert prepared.errors == {1: ("PREPROCESS_FAILED", "ValueError: negative v")}
    (request,) = prepared.requests
    assert request.tensors["x"].ravel().tolist() == [10.0, 25.0]
    assert prepared.carried == {"v": [1.0, -1.0, 2.5]}
    pre.close()


def test_a_preprocess_function_that_cannot_be_imported_names_it() -> None:
    with pytest.raises(ValueError, match="cannot import 'nosuchmodule:f'"):
        Preprocessor([], Preprocess(function="nosuchmodule:f"), [], batch_size=1)


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.arange(6, dtype=np.float32).reshape(2, 3), "FP32"),
        (np.arange(40, dtype=np.int64)[::2].reshape(-1, 1), "INT64"),  # not contiguous
        (np.array(3.0, dtype=np.float32), "FP32"),  # an unbatched model's single item
        (np.zeros((0, 3), np.float32), "FP32"),
        (np.array([[b"ab"], [b"c"]], dtype=object), "BYTES"),
    ],
)
def test_request_wire_bytes_parse_as_the_request_tritonclient_sends(
    array: np.ndarray, datatype: str
) -> None:
    inputs = {"x": (array, datatype), "z": (np.ones(2, np.int32), "INT32")}
    wire = encode_request("m", "2", inputs, ["y"])
    expected = service_pb2.ModelInferRequest(model_name="m", model_version="2")
    for name, (values, dtype) in inputs.items():
        tensor = grpc_client.InferInput(name, list(values.shape), dtype)
        tensor.set_data_from_numpy(values)
        expected.inputs.append(tensor._get_tensor())  # what tritonclient sends
        expected.raw_input_contents.append(tensor._get_content())
    expected.outputs.add(name="y")
    assert service_pb2.ModelInferRequest.FromString(wire) == expected


def test_reads_hold_whole_requests_and_a_bounded_number_of_bytes() -> None:
    assert read_rows(1024, 4) == 16384  # small items: many requests per read
    assert read_rows(1000, 4) == 16000
    image = 3 * 224 * 224 * 4
    assert read_rows(8, image) == 104  # 64 MiB of 588 KiB images, in whole requests
    assert read_rows(256, image) == 256  # at least one request
    assert read_rows(64, None) == 64  # items of unknown size: one request per read
    assert InputBinding("x", "x", "FP32", (3, 224, 224)).fixed_size
    assert not InputBinding("x", "x", "FP32", (-1, -1, 3)).fixed_size
    assert not InputBinding("x", "x", "BYTES", (1,)).fixed_size


@pytest.mark.parametrize(
    ("error", "location_is_wrong"),
    [
        (FileNotFoundError("NoSuchBucket"), True),
        (PermissionError("AccessDenied"), True),
        (NotADirectoryError("a file where the directory goes"), True),
        (OSError(errno.EROFS, "Read-only file system"), True),
        (TimeoutError("read timeout"), False),
        (ConnectionRefusedError("connection refused"), False),
        (OSError(errno.EIO, "SlowDown"), False),
    ],
)
def test_only_a_wrong_output_location_stops_the_plan_for_good(
    error: OSError, location_is_wrong: bool
) -> None:
    assert cannot_write_there(error) is location_is_wrong


def test_a_row_cannot_name_a_file_for_the_worker_to_read(tmp_path: Path) -> None:
    """Data never decides what the worker fetches: `_uri` or `$source` in a row opens nothing;
    a `files` item's bytes come from the file the reader listed under the dataset root."""
    token = tmp_path / "token"
    token.write_text("SECRET-TOKEN")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"_uri": str(token), "$source": str(token), "path": str(token)}) + "\n"
    )
    binding = [InputBinding("b", ITEM_FIELD, "BYTES", (1,))]
    pre = Preprocessor(binding, None, [], batch_size=8)
    (batch,) = open_dataset(InputSpec(uri=str(rows), format="jsonl")).iter_items()
    prepared = pre.prepare(batch)
    assert prepared.errors == {0: ("MALFORMED_ITEM", "field '$item' is missing")}
    assert not prepared.requests
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.bin").write_bytes(b"listed")
    (batch,) = open_dataset(InputSpec(uri=str(images), format="files")).iter_items()
    (request,) = pre.prepare(batch).requests
    assert request.tensors["b"].ravel().tolist() == [b"listed"]
