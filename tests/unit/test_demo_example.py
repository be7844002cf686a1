"""The demo's BatchPrediction (examples/demo/digits.yaml) as `make demo` renders it: a valid
spec whose data is in the demo's bucket, whose pods get the endpoint and the credentials of the
Secret the demo creates, and nothing left unfilled."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchpredict.api.validation import parse_batch_prediction
from demo.run import SECRET_NAME, credentials_secret, render
from demo.storage import BUCKET, CREDENTIALS


def test_the_rendered_example_reads_and_writes_the_bucket_with_the_secret() -> None:
    body = render("http://127.0.0.1:9000", "localhost:8001")
    parse_batch_prediction(body)  # raises InvalidSpecError naming the field
    spec = body["spec"]
    assert spec["triton"]["url"] == "localhost:8001"
    assert spec["input"]["uri"] == f"s3://{BUCKET}/digits/images"
    assert spec["output"]["uri"].startswith(f"s3://{BUCKET}/")
    assert spec["evaluation"]["labels"]["dataset"]["uri"] == f"s3://{BUCKET}/digits/labels.csv"
    env = {e["name"]: e for e in spec["worker"]["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://127.0.0.1:9000"
    secret = credentials_secret("ns")
    for key in CREDENTIALS:
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": key}
        assert key in secret["stringData"]
    assert secret["metadata"] == {"name": SECRET_NAME, "namespace": "ns"}


def test_a_placeholder_left_unfilled_is_refused(tmp_path: Path) -> None:
    example = tmp_path / "run.yaml"
    example.write_text("spec:\n  input:\n    uri: ${DATA_DIR}/items.jsonl\n")
    with pytest.raises(RuntimeError, match="placeholder other than S3_ENDPOINT and TRITON_URL"):
        render("http://127.0.0.1:9000", "localhost:8001", example)
