"""What the node agent does with a pod: env, volumes, init containers, sidecars, restarts."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.manifests import container, pod, pod_finished, terminated, waiting_reason
from tests.harness.fixtures import Cluster

# Pod paths: under BATCHPREDICT_CONTAINER_ROOT on the local node agent, "/" on a real node.
ROOT = "import os, sys, json, time; R = os.environ.get('BATCHPREDICT_CONTAINER_ROOT', '')\n"
WORK = {"volumeMounts": [{"name": "work", "mountPath": "/work"}]}


def finished(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    return cluster.wait_for_object("pod", name, namespace, pod_finished, "finished", timeout=90)


def test_init_container_sidecar_env_and_volumes(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "configmap", "settings", "--from-literal=greeting=hello", "-n", namespace
    )
    cluster.kubectl(
        "create", "secret", "generic", "creds", "--from-literal=password=s3cret", "-n", namespace
    )
    prepare = ROOT + "open(R + '/work/prepared', 'w').write('by init')"
    helper = ROOT + "open(R + '/work/sidecar', 'w').write('up'); time.sleep(300)"
    probe = {
        "exec": {
            "command": ["python", "-c", ROOT + "sys.exit(not os.path.exists(R + '/work/sidecar'))"]
        },
        "periodSeconds": 1,
        "failureThreshold": 30,
    }
    main = ROOT + (
        "print(json.dumps({'prepared': open(R + '/work/prepared').read(),"
        " 'sidecar': open(R + '/work/sidecar').read(),"
        " 'env': {k: os.environ[k] for k in ('POD', 'NS', 'GREETING', 'PASSWORD', 'PHRASE')}}))"
    )
    env = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
        },
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "PHRASE", "value": "$(GREETING) world"},
    ]
    spec = {
        "restartPolicy": "Never",
        "volumes": [{"name": "work", "emptyDir": {}}],
        "initContainers": [
            container("prepare", prepare, **WORK),
            container("helper", helper, restartPolicy="Always", startupProbe=probe, **WORK),
        ],
        "containers": [container("main", main, env=env, **WORK)],
    }
    cluster.apply(pod("full", spec), namespace)

    done = finished(cluster, "full", namespace)

    logs = cluster.kubectl("logs", "-n", namespace, "full", "-c", "main").stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert json.loads(logs) == {
        "prepared": "by init",
        "sidecar": "up",
        "env": {
            "POD": "full",
            "NS": namespace,
            "GREETING": "hello",
            "PASSWORD": "s3cret",
            "PHRASE": "hello world",
        },
    }
    inits = {s["name"]: s for s in done["status"]["initContainerStatuses"]}
    assert inits["prepare"]["state"]["terminated"]["exitCode"] == 0
    # The sidecar was stopped once the app container finished (SIGTERM: 143 or a clean 0).
    assert inits["helper"]["state"]["terminated"]["exitCode"] in (0, 143)
    assert condition_status(done, "Initialized") == "True"


def condition_status(obj: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in obj["status"]["conditions"] if c["type"] == kind), None)


def test_on_failure_restarts_the_container(cluster: Cluster, namespace: str) -> None:
    code = ROOT + (
        "first = not os.path.exists(R + '/work/ran'); open(R + '/work/ran', 'w').close()\n"
        "print('first run' if first else 'second run'); sys.exit(5 if first else 0)"
    )
    spec = {
        "restartPolicy": "OnFailure",
        "volumes": [{"name": "work", "emptyDir": {}}],
        "containers": [container("main", code, **WORK)],
    }
    cluster.apply(pod("retry", spec), namespace)

    done = finished(cluster, "retry", namespace)

    status = done["status"]["containerStatuses"][0]
    assert done["status"]["phase"] == "Succeeded"
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 5
    assert cluster.kubectl("logs", "-n", namespace, "retry").stdout.strip() == "second run"
    previous = cluster.kubectl("logs", "-n", namespace, "retry", "--previous").stdout
    assert previous.strip() == "first run"


def test_failure_reports_exit_code_and_message_from_logs(cluster: Cluster, namespace: str) -> None:
    code = "import sys; print('shard 7 is unreadable'); sys.exit(3)"
    spec = {
        "restartPolicy": "Never",
        "containers": [container("main", code, terminationMessagePolicy="FallbackToLogsOnError")],
    }
    cluster.apply(pod("broken", spec), namespace)

    done = finished(cluster, "broken", namespace)

    assert done["status"]["phase"] == "Failed"
    assert terminated(done)["exitCode"] == 3
    assert terminated(done)["message"].strip() == "shard 7 is unreadable"
    assert condition_status(done, "Ready") == "False"


def test_missing_config_map_keeps_the_pod_waiting(cluster: Cluster, namespace: str) -> None:
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
    spec = {"containers": [container("main", "print(1)", env=env)]}
    cluster.apply(pod("waiting", spec), namespace)

    waiting = cluster.wait_for_object(
        "pod",
        "waiting",
        namespace,
        lambda p: waiting_reason(p) == "CreateContainerConfigError",
        "CreateContainerConfigError",
    )

    assert waiting["status"]["phase"] == "Pending"
    assert (
        'configmap "absent" not found'
        in waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    )
