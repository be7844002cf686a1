"""Tenancy: the operator's policy refuses what the platform did not allow, naming the field and
the rule, and status.startedBy is recorded once from the guarded annotation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from batchpredict.api.validation import InvalidSpecError, parse_spec
from batchpredict.controller.config import OperatorConfig, TenancyPolicy
from batchpredict.reconcile.jobs import build_step_job, build_worker_job
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.tenancy import policy_violations, started_by
from batchpredict.worker.config import CannotStartError, load_env, make_client
from batchpredict.worker.plan import run_plan
from tests.unit.test_jobs import CONFIG, OWNER, SPEC


def violations(config: OperatorConfig = CONFIG, **changes: Any) -> list[str]:
    return policy_violations(parse_spec({**SPEC, **changes}), config)


def test_a_plain_run_and_the_operators_own_image_pass() -> None:
    assert violations() == []
    assert violations(worker={"image": CONFIG.worker_image}) == []


def test_images_must_match_an_allowed_prefix_and_a_digest_when_required() -> None:
    (problem,) = violations(worker={"image": "evil.example/miner:latest"})
    assert problem.startswith("spec.worker.image: evil.example/miner:latest is not an allowed")
    assert "allowedImages" in problem
    sidecar = {"sidecar": {"image": "evil.example/triton:1", "modelRepository": "s3://b/m"}}
    (problem,) = violations(triton=sidecar)
    assert problem.startswith("spec.triton.sidecar.image: evil.example/triton:1")
    image = "nvcr.io/nvidia/tritonserver:25.10-py3"
    triton = {"sidecar": {"image": image, "modelRepository": "s3://b/m"}}
    assert violations(triton=triton) == []
    pinned = CONFIG.model_copy(update={"policy": TenancyPolicy(require_image_digest=True)})
    (problem,) = violations(pinned, triton=triton)
    assert "must be pinned by digest (operator policy requireImageDigest)" in problem
    digest = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    assert (
        violations(pinned, triton={"sidecar": {"image": digest, "modelRepository": "s3://b/m"}})
        == []
    )


def test_host_path_volumes_are_refused_by_default() -> None:
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
        {"name": "node", "hostPath": {"path": "/var/run/secrets"}},
    ]
    (problem,) = violations(worker={"volumes": volumes})
    assert problem.startswith("spec.worker.volumes[1].hostPath: volume type hostPath is not")
    assert "allowedVolumeTypes" in problem
    allowing = TenancyPolicy(allowed_volume_types=["persistentVolumeClaim", "hostPath"])
    config = CONFIG.model_copy(update={"policy": allowing})
    assert violations(config, worker={"volumes": volumes}) == []


def test_service_accounts_are_the_workers_or_listed_ones() -> None:
    (problem,) = violations(worker={"serviceAccountName": "namespace-admin"})
    assert problem.startswith("spec.worker.serviceAccountName: namespace-admin is not allowed")
    assert violations(worker={"serviceAccountName": CONFIG.worker_service_account}) == []
    listed = TenancyPolicy(allowed_service_accounts=["s3-reader"])
    config = CONFIG.model_copy(update={"policy": listed})
    assert violations(config, worker={"serviceAccountName": "s3-reader"}) == []
    anyone = CONFIG.model_copy(update={"policy": TenancyPolicy(allowed_service_accounts=None)})
    assert violations(anyone, worker={"serviceAccountName": "namespace-admin"}) == []


def test_priority_classes_only_when_listed() -> None:
    (problem,) = violations(worker={"priorityClassName": "system-cluster-critical"})
    assert problem.startswith("spec.worker.priorityClassName: system-cluster-critical is not")
    listed = CONFIG.model_copy(
        update={"policy": TenancyPolicy(allowed_priority_classes=["batch-low"])}
    )
    assert violations(listed, worker={"priorityClassName": "batch-low"}) == []


def test_preprocess_functions_only_from_allowed_modules() -> None:
    popen = {**SPEC["input"], "preprocess": {"function": "subprocess:Popen"}}
    (problem,) = violations(input=popen)
    assert problem.startswith("spec.input.preprocess.function: subprocess:Popen is not from an")
    ours = TenancyPolicy(allowed_preprocess_modules=["acme.prep"])
    config = CONFIG.model_copy(update={"policy": ours})
    good = {**SPEC["input"], "preprocess": {"function": "acme.prep.images:scale"}}
    assert violations(config, input=good) == []
    sneaky = {**SPEC["input"], "preprocess": {"function": "acme.prepx:scale"}}
    assert len(violations(config, input=sneaky)) == 1


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"worker": {"env": [{"name": "BATCHPREDICT_RUN_UID", "value": "other-run"}]}},
            "spec.worker.env.0: Value error, BATCHPREDICT_RUN_UID: names starting with "
            "BATCHPREDICT_ are the operator's own",
        ),
        (
            {"triton": {"url": "triton:8001", "headersSecret": "token"}},
            "spec.triton: triton.headersSecret needs TLS",
        ),
        (
            {
                "triton": {
                    "url": "https://triton:8000",
                    "tls": {"insecureSkipVerify": True},
                    "headersSecret": "token",
                }
            },
            "spec.triton: triton.headersSecret cannot go with triton.tls.insecureSkipVerify",
        ),
    ],
)
def test_specs_that_would_leak_are_invalid(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec({**SPEC, **changes})
    assert expected.replace("Value error, ", "") in str(error.value)


def test_headers_travel_in_clear_text_only_when_the_run_says_so() -> None:
    tuned = {"worker": {"env": [{"name": "BATCHPREDICT_CHUNK_ITEMS", "value": "40"}]}}
    assert parse_spec({**SPEC, **tuned}).worker.env
    url = {"url": "grpcs://triton:8001", "headersSecret": "token"}
    assert parse_spec({**SPEC, "triton": url}).triton is not None
    opt_out = {"url": "triton:8001", "headersSecret": "token", "allowHeadersWithoutTls": True}
    assert parse_spec({**SPEC, "triton": opt_out}).triton is not None


def test_triton_secrets_are_mounted_only_in_pods_that_call_triton() -> None:
    triton = {"url": "https://triton:8000", "tls": {"secretName": "ca"}, "headersSecret": "token"}
    spec = parse_spec({**SPEC, "triton": triton})

    def secrets(job: dict[str, Any]) -> set[str]:
        volumes = job["spec"]["template"]["spec"]["volumes"]
        return {v["secret"]["secretName"] for v in volumes if "secret" in v}

    assert secrets(build_step_job(OWNER, spec, CONFIG, Role.PLAN)) == {"ca", "token"}
    assert secrets(build_worker_job(OWNER, spec, CONFIG, shards=1, round_=0)) == {"ca", "token"}
    assert secrets(build_step_job(OWNER, spec, CONFIG, Role.FINALIZE)) == set()


def test_started_by_is_kept_once_recorded_and_trusted_only_when_verified() -> None:
    note = {"batchpredict.io/started-by": "alice"}
    assert started_by(None, note, verified=True) == "alice"
    assert started_by(None, note, verified=False) == "alice (unverified)"
    assert started_by("bob", note, verified=True) == "bob"
    assert started_by(None, {}, verified=True) is None


def test_the_plan_refuses_an_output_location_holding_foreign_files(tmp_path: Path) -> None:
    """A run never overwrites files it did not write: the plan refuses before anything else."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "predictions.jsonl").write_text("someone else's\n")
    spec = {**SPEC, "input": {"uri": str(tmp_path / "in.jsonl"), "format": "jsonl"}}
    env = load_env({"BATCHPREDICT_SPEC": json.dumps({**spec, "output": {"uri": str(output)}})})
    with pytest.raises(CannotStartError, match=r"spec.output.uri: .* is not empty") as error:
        asyncio.run(run_plan(env))
    assert "predictions.jsonl" in str(error.value)
    assert (output / "predictions.jsonl").read_text() == "someone else's\n"


def test_the_worker_never_sends_headers_in_clear_text(tmp_path: Path) -> None:
    """Header files the run did not ask for over TLS (say, a volume mounted where the operator
    mounts headersSecret) stop the worker instead of going to the server in clear text."""
    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / "authorization").write_text("Bearer secret")
    env = {"BATCHPREDICT_SPEC": json.dumps(SPEC), "BATCHPREDICT_HEADERS_DIR": str(headers)}
    with pytest.raises(CannotStartError, match=r"triton\.headersSecret needs TLS"):
        make_client(load_env(env))
    opt_out = {**SPEC, "triton": {"url": "triton:8001", "allowHeadersWithoutTls": True}}

    async def headers_sent() -> dict[str, str] | None:
        client = make_client(load_env({**env, "BATCHPREDICT_SPEC": json.dumps(opt_out)}))
        await client.close()
        return client.headers

    assert asyncio.run(headers_sent()) == {"authorization": "Bearer secret"}
