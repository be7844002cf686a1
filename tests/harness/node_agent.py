"""The test node agent: a minimal kubelet that runs pods as local processes.

    python -m tests.harness.node_agent <config.json>     (started by tests.harness.cluster)

It registers the Nodes named in the config (capacity, labels, taints), renews their Leases and
Ready condition, watches the pods bound to them and runs each with `pod_runner.PodRunner`, and
serves `kubectl logs` to the API server on the kubelet port (HTTPS, client certificates from
the cluster CA). Images are not pulled: commands run on this machine, with the virtualenv's
`bin` first on PATH (a `tritonserver` of NVIDIA's Triton image runs the nvidia-pytriton wheel's
binary: tests.harness.triton_standin). SIGTERM stops every container it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import kubelet_server
from tests.harness.kubeclient import ApiError, KubeClient
from tests.harness.pod_runner import PodRunner, now

log = logging.getLogger("node-agent")
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 30.0


class NodeAgent:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.client = KubeClient(config["server"], config["token"], config["caFile"])
        self.state_dir = Path(config["stateDir"])
        self.nodes: list[dict[str, Any]] = config["nodes"]
        port = config["server"].rsplit(":", 1)[1]
        # What every container gets before its own env; nothing leaks from the agent's.
        self.base_env = {
            "PATH": f"{config['pathPrefix']}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
            "BATCHPREDICT_CLUSTER_DIR": str(self.state_dir),
        }
        self.runners: dict[str, PodRunner] = {}
        self._removing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- nodes ---------------------------------------------------------------------------
    def _node_status(self, node: dict[str, Any]) -> dict[str, Any]:
        heartbeat = now()
        ok = {"lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", **ok}
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "test node agent is posting ready status",
                **ok,
            }
        )
        return {
            "capacity": node["capacity"],
            "allocatable": node["capacity"],
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node["name"]},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config["kubeletPort"]}},
            "nodeInfo": {
                "machineID": node["name"],
                "systemUUID": node["name"],
                "bootID": node["name"],
                "kernelVersion": platform.release(),
                "osImage": "batchpredict test node agent",
                "containerRuntimeVersion": "local-process://1",
                "kubeletVersion": self.config.get("kubeletVersion", "v0.0.0"),
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register(self, node: dict[str, Any]) -> None:
        name = node["name"]
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **node["labels"],
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": node["taints"]},
        }
        try:
            await self.client.create("/api/v1/nodes", body)
        except ApiError as err:
            if err.status != 409:
                raise
            await self.client.merge_patch(f"/api/v1/nodes/{name}", body)
        await self.client.merge_patch(
            f"/api/v1/nodes/{name}/status", {"status": self._node_status(node)}
        )

    async def heartbeat(self) -> None:
        last_status = asyncio.get_running_loop().time()
        while True:
            for node in self.nodes:
                try:
                    await self._renew_lease(node["name"])
                    if asyncio.get_running_loop().time() - last_status > STATUS_EVERY:
                        await self.client.merge_patch(
                            f"/api/v1/nodes/{node['name']}/status",
                            {"status": self._node_status(node)},
                        )
                except (ApiError, OSError, aiohttp.ClientError) as err:
                    log.warning("heartbeat of %s failed: %s", node["name"], err)
            if asyncio.get_running_loop().time() - last_status > STATUS_EVERY:
                last_status = asyncio.get_running_loop().time()
            await asyncio.sleep(RENEW_EVERY)

    async def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        renew = now().replace("Z", ".000000Z")
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}
        try:
            await self.client.merge_patch(path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            await self.client.create(path.rsplit("/", 1)[0], body)

    # -- pods ----------------------------------------------------------------------------
    async def watch_pods(self, node: str) -> None:
        selector = {"fieldSelector": f"spec.nodeName={node}"}
        while True:
            try:
                listing = await self.client.get("/api/v1/pods", selector)
                seen = {pod["metadata"]["uid"] for pod in listing["items"]}
                for uid, runner in list(self.runners.items()):
                    if runner.pod["spec"].get("nodeName") == node and uid not in seen:
                        await self._gone(uid)
                for pod in listing["items"]:
                    await self._observe(pod)
                params = {**selector, "resourceVersion": listing["metadata"]["resourceVersion"]}
                async for kind, pod in self.client.watch("/api/v1/pods", params):
                    if kind == "DELETED":
                        await self._gone(pod["metadata"]["uid"])
                    elif kind in ("ADDED", "MODIFIED"):
                        await self._observe(pod)
                    elif kind == "ERROR":
                        break
            except (TimeoutError, ApiError, OSError, ValueError, aiohttp.ClientError) as err:
                # A restarted API server drops the stream (ServerDisconnectedError, a
                # ClientError but no OSError): list and watch again, as a kubelet does.
                log.warning("pod watch on %s restarts: %s", node, err)
                await asyncio.sleep(1)

    async def _observe(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        deleting = pod["metadata"].get("deletionTimestamp") is not None
        if runner is None and not deleting:
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self.runners[uid] = PodRunner(self, pod)
            return
        if runner is not None:
            runner.pod = pod
        if deleting and uid not in self._removing:
            self._removing.add(uid)
            task = asyncio.create_task(self._remove(pod, runner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _remove(self, pod: dict[str, Any], runner: PodRunner | None) -> None:
        """The kubelet's part of deletion: stop the containers, then delete with grace 0."""
        meta = pod["metadata"]
        if runner is not None:
            await runner.stop(grace=min(float(meta.get("deletionGracePeriodSeconds") or 30), 30))
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        with contextlib.suppress(ApiError):
            await self.client.delete(path, body)

    async def _gone(self, uid: str) -> None:
        self._removing.discard(uid)
        runner = self.runners.pop(uid, None)
        if runner is not None:
            await runner.stop(grace=2.0)

    async def shutdown(self) -> None:
        await asyncio.gather(*(r.stop(grace=5.0) for r in self.runners.values()))

    async def run(self) -> None:
        for node in self.nodes:
            await self.register(node)
        server = await kubelet_server.start(self)
        tasks = [asyncio.create_task(self.heartbeat())]
        tasks += [asyncio.create_task(self.watch_pods(n["name"])) for n in self.nodes]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving nodes %s", ", ".join(n["name"] for n in self.nodes))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await self.shutdown()
        await server.cleanup()
        await self.client.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(NodeAgent(config).run())


if __name__ == "__main__":
    main()
