"""Node pools fail loudly: an unknown spec.worker.nodePool fails the run at once with the list
of known pools; a known one places the pods."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from batchpredict.api.v1alpha1.status import ConditionType, Phase
from batchpredict.controller.config import NodePool, OperatorConfig
from batchpredict.reconcile.decision import Decision
from batchpredict.reconcile.naming import Role
from batchpredict.reconcile.observed import Observed
from batchpredict.reconcile.run import reconcile_run
from tests.unit.test_run import PLANNED, T0, bp, job

GPU = NodePool(
    node_selector={"batchpredict.io/node-pool": "gpu"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    resources={"limits": {"nvidia.com/gpu": 1}},
)
CONFIG = OperatorConfig(
    node_pools={"gpu": GPU, "cpu": NodePool()},
    node_pools_config_map="batchpredict-system/batchpredict-node-pools",
)


def reconcile(
    previous: Decision | None, *jobs: Any, admitted: bool = True, **worker: Any
) -> Decision:
    status = previous.status.model_dump(mode="json", by_alias=True) if previous else None
    observed = Observed(
        now=T0 + timedelta(seconds=1),
        jobs=tuple(j for j in jobs if not hasattr(j, "data")),
        plan=next((j for j in jobs if hasattr(j, "data")), None),
    )
    return reconcile_run(bp(status, worker=worker), observed, CONFIG, admitted=admitted)


def failed_condition(decision: Decision) -> tuple[str, str, str]:
    (failed,) = [c for c in decision.status.conditions if c.type == ConditionType.FAILED.value]
    return failed.status.value, failed.reason, failed.message


def test_an_unknown_pool_fails_the_run_at_once_with_the_known_pools() -> None:
    d = reconcile(None, nodePool="gpu-a100")
    assert d.create == [], "nothing is created for a run that cannot be placed"
    assert d.status.phase is Phase.FAILED
    status, reason, message = failed_condition(d)
    assert (status, reason) == ("True", "UnknownNodePool")
    assert message == (
        "spec.worker.nodePool: 'gpu-a100' is not a node pool of this operator (known pools: "
        "cpu, gpu; they come from the operator's Helm values `nodePools`; listed in ConfigMap "
        "batchpredict-system/batchpredict-node-pools)"
    )
    assert d.status.completion_time is not None
    assert [(e.type, e.reason, e.message) for e in d.events] == [("Warning", "Failed", message)]


def test_queued_and_suspended_runs_fail_too() -> None:
    for d in (
        reconcile(None, admitted=False, nodePool="gpu-a10"),
        reconcile_run(
            bp(None, worker={"nodePool": "gpu-a10"}, suspend=True),
            Observed(now=T0),
            CONFIG,
        ),
    ):
        assert d.status.phase is Phase.FAILED
        assert failed_condition(d)[1] == "UnknownNodePool"


def test_no_pools_defined_says_so() -> None:
    d = reconcile_run(bp(None, worker={"nodePool": "gpu"}), Observed(now=T0), OperatorConfig())
    assert "known pools: none are defined" in (d.status.message or "")


def test_a_known_pool_places_the_plan_and_gives_the_shards_its_gpu() -> None:
    plan = reconcile(None, nodePool="gpu")
    assert plan.status.phase is Phase.PENDING
    (plan_job,) = plan.create
    pod = plan_job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"batchpredict.io/node-pool": "gpu"}
    assert pod["tolerations"] == GPU.tolerations
    shards = reconcile(plan, job(Role.PLAN, complete=True), PLANNED, nodePool="gpu")
    (round0,) = shards.create
    worker = round0["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_a_pool_gone_mid_run_stops_the_pods_instead_of_placing_jobs_anywhere() -> None:
    running = reconcile(
        reconcile(None, nodePool="gpu"), job(Role.PLAN, complete=True), PLANNED, nodePool="gpu"
    )
    gone = reconcile(
        running,
        job(Role.PLAN, complete=True),
        PLANNED,
        job(Role.SHARDS, active=2),
        nodePool="gpu-old",
    )
    assert gone.create == []
    assert ("run-shards-0", {"spec": {"suspend": True}}) in gone.patch_jobs
    assert "gpu-old" in (gone.status.message or "")
