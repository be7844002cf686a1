"""`make demo` / `make demo-down`: a real batch prediction on a local Kubernetes cluster.

    python -m demo up      cluster (or $KUBECONFIG), operator via Helm, Triton, the run, results
    python -m demo down    stop what `up` started
    python -m demo status  what is running

A CLI: printing to the user is its job. Files live under .demo/ (git-ignored).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.cluster import LocalCluster
from tests.harness.images import IMAGE
from tests.harness.procs import ClusterError
from tests.harness.triton_server import TritonHandle

from demo import digits
from demo.platform import (
    DEMO_DIR,
    OPERATOR_NAME,
    OPERATOR_NAMESPACE,
    RUN_NAMESPACE,
    DemoError,
    DemoState,
    Kube,
    build_image,
    cluster_up,
    containers_possible,
    free_port,
    install_crds,
    install_operator,
    prepare_namespace,
    start_model_server,
    stop_model_server,
    uninstall_operator,
)
from demo.results import RunResults, read_results
from demo.run import apply_run, follow, render
from demo.storage import ObjectStore, ObjectStoreError, start_object_store, stop_object_store

Show = Callable[[str], None]
SAMPLE = 10


@dataclass
class DemoRun:
    results: RunResults
    status: dict[str, Any]
    triton: TritonHandle
    report: list[str]
    kubeconfig: Path


class Clock:
    """Prints each step with the seconds since `make demo` started."""

    def __init__(self, show: Show) -> None:
        self.show = show
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.show(f"[{time.monotonic() - self.started:5.1f}s] {text}")


@dataclass(frozen=True)
class Served:
    """The demo's data in the object store, its model, and the Triton serving it."""

    prepared: digits.Prepared
    store: ObjectStore
    triton: TritonHandle

    def stop(self) -> None:
        self.triton.stop()
        self.store.stop()


def serve_model(workdir: Path, clock: Clock) -> Served:
    """Train, write the data and the model repository, upload the data to the object store,
    start Triton (the caller stops both)."""
    clock.step("training the digit classifier, writing 1,797 PNG images and 3 corrupt files")
    prepared = digits.prepare(workdir)
    store = start_object_store(workdir, free_port())
    try:
        uri = store.upload(prepared.images, "digits/images")
        labels = store.upload_file(prepared.labels, "digits/labels.csv")
        clock.step(
            f"uploaded them to {uri} and the labels to {labels} "
            f"(moto's S3 server at {store.endpoint})"
        )
        triton = start_model_server(prepared.model_repository, [digits.MODEL_NAME])
    except BaseException:
        store.stop()
        raise
    clock.step(f"Triton serves model '{digits.MODEL_NAME}' at {triton.grpc_url}")
    return Served(prepared, store, triton)


def run_demo(kube: Kube, workdir: Path, namespace: str, clock: Clock, served: Served) -> DemoRun:
    """Run the BatchPrediction of examples/demo against `served`, read and report its results.
    The operator must already serve `namespace`."""
    body = render(served.store.endpoint, served.triton.grpc_url)
    name = apply_run(kube, namespace, body)
    clock.step(f"applied examples/demo/digits.yaml as bp/{name} in namespace {namespace}")
    final = follow(kube, name, namespace, clock.show)
    status = dict(final.get("status") or {})
    if status.get("phase") == "Failed":
        raise DemoError(
            f"bp/{name} failed: {status.get('conditions')}; "
            f"see kubectl describe bp {name} -n {namespace}"
        )
    output = served.store.download(body["spec"]["output"]["uri"], workdir / "output" / name)
    clock.step(f"copied {body['spec']['output']['uri']}/ to {output}/")
    results = read_results(output, served.prepared.labels)
    report = summarize(results, status, name, namespace)
    for line in report:
        clock.show(line)
    return DemoRun(results, status, served.triton, report, kube.kubeconfig)


def summarize(results: RunResults, status: dict[str, Any], name: str, namespace: str) -> list[str]:
    """The closing report: counts, where the output is, a sample, accuracy, failures."""
    items = status.get("items") or {}
    test_acc, test_n = results.accuracy("test")
    all_acc, all_n = results.accuracy()
    lines = [
        "",
        f"Run {namespace}/{name}: {status.get('phase')}",
        f"  items       {items.get('total')} total, {items.get('succeeded')} succeeded, "
        f"{items.get('failed')} failed",
        f"  output      {results.output}/ (a copy of the bucket's)",
        "              manifest.json, predictions.jsonl (combined), failures.jsonl, rounds/",
        "",
        f"  {'image':<18}{'predicted':>10}{'label':>7}{'prob':>7}",
    ]
    for item, predicted, label, prob in results.sample(SAMPLE):
        mark = "" if predicted == label else "   <- wrong"
        lines.append(f"  {item:<18}{predicted:>10}{label:>7}{prob:>7.3f}{mark}")
    evaluation = status.get("evaluation") or {}
    lines += [
        "",
        f"  measured by the operator: status.evaluation {evaluation.get('summary')}, "
        f"label coverage {evaluation.get('labelCoverage')}; all metrics in evaluation.json",
        f"  accuracy on the {test_n} held-out test images: {test_acc:.4f}",
        f"  accuracy on all {all_n} images (70% were seen in training): {all_acc:.4f}",
        "",
        f"  failed items ({len(results.failures)}), from failures.jsonl:",
    ]
    lines += [f"    {f.id}: {f.code}: {f.message}" for f in results.failures]
    shown = status.get("failedItems") or []
    lines.append(
        f"  status.failedItems lists {len(shown)}: kubectl describe bp {name} -n {namespace}"
    )
    return lines


# -- commands ----------------------------------------------------------------------------------


def up(show: Show) -> int:
    clock = Clock(show)
    workdir = DEMO_DIR
    workdir.mkdir(exist_ok=True)
    previous = DemoState.load(workdir)
    if previous and stop_model_server(previous):
        clock.step("stopped the Triton of the previous demo run")
    if previous and stop_object_store(previous.s3_pid):
        clock.step("stopped the S3 server of the previous demo run")
    # Training and Triton's start overlap the cluster's start and the operator's install.
    with ThreadPoolExecutor(max_workers=1) as pool:
        serving = pool.submit(serve_model, workdir, clock)
        try:
            run = _up(clock, workdir, serving)
        except BaseException:
            if not serving.cancel() and serving.exception() is None:
                serving.result().stop()
            raise
    clock.step("done. Everything keeps running until `make demo-down`; try:")
    show(f"  export KUBECONFIG={run.kubeconfig}")
    show(f"  kubectl get bp -n {RUN_NAMESPACE} -o wide")
    show(f"  kubectl describe bp digits -n {RUN_NAMESPACE}")
    show(f"  kubectl logs -n {OPERATOR_NAMESPACE} deploy/{OPERATOR_NAME}")
    return 0


def use_containers(clock: Clock, kube: Kube) -> bool:
    """Whether the pods run in containers (runc, from the image): yes on a local cluster's node
    agent when this machine can (root), after building the image (`make images`, cached)."""
    why_not = containers_possible(kube)
    if why_not:
        clock.step(f"pods run as local processes ({why_not})")
        return False
    clock.step("building the image (make images; cached by content)")
    size = build_image()
    clock.step(f"image {IMAGE} ({size}): the pods run in containers from it (runc)")
    return True


def _up(clock: Clock, workdir: Path, serving: Future[Served]) -> DemoRun:
    clock.step("starting the local Kubernetes cluster (or using $KUBECONFIG)")
    kubeconfig, local = cluster_up(workdir)
    if not local:
        clock.step(f"using the cluster of KUBECONFIG={kubeconfig}")
    state = DemoState(str(kubeconfig), local)
    state.save(workdir)
    kube = Kube(kubeconfig, workdir / "helm-home")
    containers = use_containers(clock, kube)
    for namespace in (OPERATOR_NAMESPACE, RUN_NAMESPACE):
        prepare_namespace(kube, namespace, containers)
    clock.step("installing the CRDs and the operator with the Helm chart (charts/batchpredict)")
    install_crds(kube)
    install_operator(kube, workdir, from_image=containers)
    clock.step(f"operator running in namespace {OPERATOR_NAMESPACE}")
    served = serving.result()
    # Recorded before the run, so that `make demo-down` stops them even after a Ctrl-C.
    state.s3_pid = served.store.pid
    state.s3_endpoint = served.store.endpoint
    state.triton_pid = served.triton.process.pid
    state.triton_grpc_url = served.triton.grpc_url
    state.triton_workdir = str(served.triton.log_path.parent)
    state.triton_log = str(served.triton.log_path)
    state.save(workdir)
    return run_demo(kube, workdir, RUN_NAMESPACE, clock, served)


def down(show: Show) -> int:
    state = DemoState.load(DEMO_DIR)
    if state and stop_model_server(state):
        show(f"demo: stopped Triton (pid {state.triton_pid})")
    if state and stop_object_store(state.s3_pid):
        show(f"demo: stopped the S3 server (pid {state.s3_pid})")
    if state and state.triton_workdir:
        shutil.rmtree(state.triton_workdir, ignore_errors=True)
    if state and not state.local_cluster:
        # Someone else's cluster: remove what the demo put there, leave the cluster running.
        kube = Kube(Path(state.kubeconfig), DEMO_DIR / "helm-home")
        kube.kubectl("delete", "namespace", RUN_NAMESPACE, "--ignore-not-found", check=False)
        uninstall_operator(kube)
        show("demo: uninstalled the operator release and deleted namespace " + RUN_NAMESPACE)
    stopped = LocalCluster(DEMO_DIR / "cluster").down(purge=True)
    if stopped:
        show(f"demo: stopped the local cluster ({', '.join(stopped)})")
    (DEMO_DIR / "state.json").unlink(missing_ok=True)
    show("demo: down (the data, model and outputs stay in .demo/)")
    return 0


def status(show: Show) -> int:
    state = DemoState.load(DEMO_DIR)
    cluster = LocalCluster(DEMO_DIR / "cluster")
    show(f"local cluster: {'running' if cluster.is_running() else 'not running'}")
    if state:
        show(f"kubeconfig: {state.kubeconfig}")
        show(f"triton: {state.triton_grpc_url} (pid {state.triton_pid}, log {state.triton_log})")
        show(f"s3: {state.s3_endpoint} (pid {state.s3_pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)

    def show(line: str) -> None:
        print(line, flush=True)

    commands = {"up": up, "down": down, "status": status}
    try:
        return commands[args.command](show)
    except (DemoError, ClusterError, ObjectStoreError) as error:
        print(f"demo {args.command} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
