"""status.evaluation from finalize, and re-validation of a finished run by an evaluate Job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from batchpredict.api.v1alpha1.evaluation import EvaluationSpec
from batchpredict.api.v1alpha1.status import EvaluationState, Phase
from batchpredict.metrics import EVALUATION, PhaseTracker
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.evaluation import refuse_revalidation
from batchpredict.reconcile.jobs import Owner, build_step_job
from batchpredict.reconcile.naming import LABEL_EVALUATION, Role
from batchpredict.reconcile.observed import (
    JobState,
    Observed,
    PodResult,
    StepOutcome,
    observe_run,
)
from batchpredict.reconcile.patching import merge_patch
from batchpredict.reconcile.run import reconcile_run
from tests.unit.test_run import CONFIG, PLANNED, T0, bp, finalized, job, name, report, step

EVAL = {"task": "classification", "prediction": "digit"}
KEY = EvaluationSpec.model_validate(EVAL).key()
CORRECTED = {**EVAL, "labels": {"field": "corrected"}}
CORRECTED_KEY = EvaluationSpec.model_validate(CORRECTED).key()


def summary(key: str, value: float) -> dict[str, Any]:
    return {
        "state": "Evaluated",
        "specKey": key,
        "metric": "accuracy",
        "value": value,
        "summary": f"accuracy={value:.4f}",
        "scored": 90,
        "unlabelled": 10,
        "failed": 0,
        "labelCoverage": 0.9,
        "uri": "/data/out/evaluation.json",
    }


def finished_run(evaluation: dict[str, Any] = EVAL) -> Decision:
    """A run that ended Succeeded, its finalize having measured `evaluation`."""
    plan = job(Role.PLAN, complete=True)
    shards = job(Role.SHARDS, complete=True, completed=frozenset({0, 1}))
    both = (plan, PLANNED, shards, report(0, 50), report(1, 50))
    finalizing = step(step(None), *both, evaluation=evaluation)
    key = EvaluationSpec.model_validate(evaluation).key()
    final = finalized(100, evaluation=summary(key, 0.93))
    done = step(finalizing, *both, job(Role.FINALIZE, complete=True), final, evaluation=evaluation)
    assert done.status.phase is Phase.SUCCEEDED
    return done


def again(
    previous: Decision,
    *jobs: JobState,
    evaluations: dict[str, StepOutcome] | None = None,
    **spec: Any,
) -> Decision:
    status = previous.status.model_dump(mode="json", by_alias=True)
    observed = Observed(now=T0 + timedelta(seconds=30), jobs=jobs, evaluations=evaluations or {})
    return reconcile_run(bp(status, **spec), observed, CONFIG)


def test_finalize_puts_the_headline_in_status() -> None:
    done = finished_run()
    evaluation = done.status.evaluation
    assert evaluation is not None
    assert evaluation.state is EvaluationState.EVALUATED
    assert (evaluation.metric, evaluation.value, evaluation.spec_key) == ("accuracy", 0.93, KEY)
    assert evaluation.summary == "accuracy=0.9300"
    assert evaluation.label_coverage == 0.9
    steady = again(done, evaluation=EVAL)
    assert not steady.create, "the measured spec is not measured again"
    assert (
        merge_patch(done.status.model_dump(mode="json"), steady.status.model_dump(mode="json"))
        == {}
    )


def test_a_run_without_evaluation_has_none() -> None:
    plan = job(Role.PLAN, complete=True)
    shards = job(Role.SHARDS, complete=True, completed=frozenset({0, 1}))
    both = (plan, PLANNED, shards, report(0, 50), report(1, 50))
    done = step(step(None), *both, job(Role.FINALIZE, complete=True), finalized(100))
    assert done.status.phase is Phase.SUCCEEDED
    assert done.status.evaluation is None
    assert not again(done).create


def test_editing_the_evaluation_of_a_finished_run_revalidates_it_from_its_files() -> None:
    done = finished_run()
    started = again(done, evaluation=CORRECTED)
    [created] = started.create
    assert created["metadata"]["name"] == name(f"eval-{CORRECTED_KEY}")
    assert created["metadata"]["labels"][LABEL_EVALUATION] == CORRECTED_KEY
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "evaluate"
    assert started.status.phase is Phase.SUCCEEDED, "the run's phase stays"
    assert started.status.completion_time == done.status.completion_time
    assert started.status.evaluation is not None
    assert started.status.evaluation.state is EvaluationState.EVALUATING
    assert [e.reason for e in started.events] == ["Revalidating"]
    evaluate = JobState(
        name=created["metadata"]["name"],
        role=Role.EVALUATE,
        round=0,
        completions=1,
        evaluation_key=CORRECTED_KEY,
        active=1,
    )
    running = again(started, evaluate, evaluation=CORRECTED)
    assert not running.create, "one evaluate Job per spec, never two"
    finished = JobState(
        name=evaluate.name,
        role=Role.EVALUATE,
        round=0,
        completions=1,
        evaluation_key=CORRECTED_KEY,
        complete=True,
    )
    outcome = StepOutcome(succeeded=True, data={"evaluation": summary(CORRECTED_KEY, 0.97)})
    measured = again(running, finished, evaluations={CORRECTED_KEY: outcome}, evaluation=CORRECTED)
    assert measured.status.evaluation is not None
    assert measured.status.evaluation.value == 0.97
    assert measured.status.evaluation.state is EvaluationState.EVALUATED
    assert [e.reason for e in measured.events] == ["Revalidated"]
    assert measured.status.items == done.status.items
    settled = again(measured, finished, evaluations={CORRECTED_KEY: outcome}, evaluation=CORRECTED)
    assert not settled.create and not settled.events


def test_a_failed_evaluate_job_is_reported_once() -> None:
    done = finished_run()
    failed = JobState(
        name="e",
        role=Role.EVALUATE,
        round=0,
        completions=1,
        evaluation_key=CORRECTED_KEY,
        failed=True,
        failure_message="BackoffLimitExceeded",
    )
    crashed = StepOutcome(succeeded=False, data={"reason": "Crashed", "message": "OSError: x"})
    result = again(done, failed, evaluations={CORRECTED_KEY: crashed}, evaluation=CORRECTED)
    assert result.status.evaluation is not None
    assert result.status.evaluation.state is EvaluationState.FAILED
    assert "OSError: x" in (result.status.evaluation.message or "")
    assert result.status.phase is Phase.SUCCEEDED
    quiet = again(result, failed, evaluations={CORRECTED_KEY: crashed}, evaluation=CORRECTED)
    assert not quiet.create and not quiet.events


def test_evaluate_pods_are_kept_per_spec_key() -> None:
    owner = Owner("run", "ml", "u-1")
    spec = bp(None, evaluation=EVAL).spec
    job_body = build_step_job(owner, spec, CONFIG, Role.EVALUATE)
    job_body["metadata"]["uid"] = "j-1"
    state = JobState.from_job(job_body)
    assert (state.role, state.evaluation_key) == (Role.EVALUATE, KEY)
    pod = {
        "metadata": {
            "labels": job_body["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [{"controller": True, "kind": "Job", "uid": "j-1"}],
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "worker",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "message": '{"evaluation":{"state":"Evaluated"}}',
                        }
                    },
                }
            ]
        },
    }
    result = PodResult.from_pod(pod, "worker")
    assert result is not None
    observed = observe_run(T0, (state,), (), (result,))
    assert observed.evaluations[KEY].data == {"evaluation": {"state": "Evaluated"}}
    assert observed.evaluate_job(KEY) is state


def test_evaluation_gauges_follow_the_run() -> None:
    tracker = PhaseTracker()
    done = finished_run()
    tracker.observe_evaluation("u-9", "ml", "run", done.status.evaluation)
    assert EVALUATION.labels(namespace="ml", name="run", metric="accuracy")._value.get() == 0.93
    samples = {
        s.labels["metric"]
        for m in EVALUATION.collect()
        for s in m.samples
        if s.labels.get("name") == "run"
    }
    assert samples == {"accuracy", "labelCoverage"}
    tracker.forget("u-9")
    left = [s for m in EVALUATION.collect() for s in m.samples if s.labels.get("name") == "run"]
    assert left == []


def test_the_evaluation_spec() -> None:
    spec = bp(
        None,
        evaluation={**EVAL, "sliceBy": ["site"]},
        output={"uri": "/o", "includeFields": ["site", "x"]},
    ).spec
    assert spec.carried_fields() == ["site", "x", "label"], "the label and slices ride along"
    joined = EvaluationSpec.model_validate(
        {**EVAL, "labels": {"dataset": {"uri": "/l.csv", "format": "csv", "idField": "id"}}}
    )
    assert joined.carried_fields() == [], "a labels dataset holds the labels"
    assert KEY != CORRECTED_KEY and len(KEY) == 10
    with pytest.raises(ValueError, match="threshold applies to binary and multilabel"):
        EvaluationSpec.model_validate({**EVAL, "threshold": 0.3})


def test_a_policy_refusal_fails_only_the_revalidation() -> None:
    done = finished_run()
    started = again(done, evaluation=CORRECTED)
    refused = refuse_revalidation(started, "refused by the operator's policy: image x")
    assert refused is not None
    assert not refused.create
    assert refused.status.phase is Phase.SUCCEEDED, "the finished run keeps its outcome"
    assert refused.status.evaluation is not None
    assert refused.status.evaluation.state is EvaluationState.FAILED
    assert refused.status.evaluation.spec_key == CORRECTED_KEY
    assert [e.reason for e in refused.events] == ["RevalidationRefused"]
    quiet = again(refused, evaluation=CORRECTED)
    assert not quiet.create, "a refused spec is not tried again until it changes"
    # a run that has not finished is refused as a whole (the handler fails it)
    assert refuse_revalidation(step(None), "refused") is None
