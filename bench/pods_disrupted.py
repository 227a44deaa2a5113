# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pods_disrupted: pods evicted to change the layout of one GPU of a full 8-GPU node.

One simulated cluster, two identical nodes (8 × A100-SXM4-40GB, MIG off, `mixed` strategy), each
filled with 8 single-GPU pods (bare pods, so an evicted pod is gone rather than re-created).
Then the same change, GPU 0 to 7 × 1g.5gb and the other seven GPUs untouched:

- on gpu-node-1, by this collection: `playbooks/mig-reconfigure.yml --limit gpu-node-1`;
- on gpu-node-2, by the seed-001 procedure (DeepOps' MIG guide): taint the node
  `mig=maintenance:NoSchedule` and `mig=maintenance:NoExecute`, label `nvidia.com/mig.config`.
  The NoExecute taint is what evicts: Kubernetes' taint manager deletes every pod that does not
  tolerate it. The simulator has no taint manager, so the benchmark plays it, applying the
  Kubernetes rule (a pod stays only if one of its tolerations matches the taint) to the pods on
  the node.

Counted: GPU workload pods that left each node; daemon pods that the taint would also remove are
reported separately. Which pod holds which GPU comes only from each node's kubelet PodResources
socket, read on the node by gpuops.nvidia.gpu_pod_devices, as on a real cluster: the benchmark
checks that no pod carries an annotation naming its devices.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping

from bench.common import Options, rounded
from bench.sim import BenchError, Cluster, converge_by_construction, playbook, require_success, wait_until

GPUS = 8
WORKLOAD_NAMESPACE = "default"
SEED_TAINT = {"key": "mig", "value": "maintenance"}
CHANGED_CONFIG = "bench-one-gpu"
CONFIGS = {
    "all-disabled": [{"devices": "all", "mig-enabled": False}],
    CHANGED_CONFIG: [
        {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
        {"devices": list(range(1, GPUS)), "mig-enabled": False},
    ],
}


def tolerates(pod: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    """Kubernetes' toleration match for one taint (key, value, effect)."""
    for toleration in (pod.get("spec") or {}).get("tolerations") or []:
        effect = toleration.get("effect")
        if effect and effect != taint["effect"]:
            continue
        key = toleration.get("key")
        if toleration.get("operator") == "Exists":
            if not key or key == taint["key"]:
                return True
        elif key == taint["key"] and toleration.get("value", "") == taint["value"]:
            return True
    return False


def workload_pods(cluster: Cluster, node: str) -> List[str]:
    return sorted(p["metadata"]["name"] for p in cluster.pods_on(node, WORKLOAD_NAMESPACE))


def running_with_device(cluster: Cluster, node: str) -> int:
    """Running workload pods that the node's kubelet lists with a device on its PodResources socket."""
    pods = cluster.pods_on(node, WORKLOAD_NAMESPACE)
    held = cluster.pod_devices(node)
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running" and held.get(p["metadata"]["name"]))


def assert_no_device_annotation(cluster: Cluster, node: str) -> None:
    """The device map must come from the kubelet alone: no pod may say which devices it holds."""
    for pod in cluster.pods_on(node):
        keys = [key for key in ((pod.get("metadata") or {}).get("annotations") or {}) if "device" in key.lower()]
        if keys:
            raise BenchError(f"pod {pod['metadata']['name']} on {node} carries device annotation(s) {keys}: the "
                             "benchmark must measure the device map read from the kubelet's PodResources API")


def seed_procedure(cluster: Cluster, node: str) -> Dict[str, Any]:
    """Taint and label as DeepOps' guide does, then evict like the taint manager."""
    taints = [dict(SEED_TAINT, effect="NoSchedule"), dict(SEED_TAINT, effect="NoExecute")]
    current = cluster.get(f"/api/v1/nodes/{node}")
    existing = (current.get("spec") or {}).get("taints") or []
    cluster.patch_node(node, {"spec": {"taints": existing + taints},
                              "metadata": {"labels": {"nvidia.com/mig.config": CHANGED_CONFIG}}})
    no_execute = taints[1]
    gpu_evicted, daemons_evicted = [], []
    for pod in cluster.pods_on(node):
        if tolerates(pod, no_execute):
            continue
        meta = pod["metadata"]
        owners = [o.get("kind") for o in meta.get("ownerReferences") or []]
        (daemons_evicted if "DaemonSet" in owners else gpu_evicted).append(meta["name"])
        if "DaemonSet" not in owners:
            cluster.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
    return {"evicted": len(gpu_evicted), "daemon_pods_also_evicted": len(daemons_evicted)}


def run(options: Options) -> Dict[str, Any]:
    started = time.perf_counter()
    workdir = options.workdir / "pods_disrupted"
    cluster = Cluster.up(workdir, nodes=2, gpus=GPUS, model="a100", plugin_delay=0.2)
    try:
        collection_node, seed_node = cluster.nodes[:2]
        # The workload is bare pods on purpose (an evicted pod is gone, not re-created, so it can be
        # counted), and the rollout refuses to evict a bare pod unless told, as kubectl drain does.
        common = {"k8s_gpu_mig_strategy": "mixed", "mig_configs": CONFIGS, "mig_reconfigure_wait_timeout": 180,
                  "mig_reconfigure_delete_bare_pods": True}
        # Both nodes run all-disabled, the device plugin advertises their 8 GPUs, the labels say so.
        converge_by_construction(cluster, "mixed", "all-disabled", "nvidia.com/gpu", GPUS)
        for node in (collection_node, seed_node):
            cluster.workload(f"work-{node}", "nvidia.com/gpu", GPUS, node=node)
            wait_until(lambda n=node: running_with_device(cluster, n) == GPUS, 120, f"{GPUS} GPU pods running on {node}")
        before = {node: workload_pods(cluster, node) for node in (collection_node, seed_node)}
        for node in (collection_node, seed_node):
            assert_no_device_annotation(cluster, node)

        cluster.clear_requests()
        change = playbook(cluster, "mig-reconfigure.yml", dict(common, mig_config_name=CHANGED_CONFIG),
                          limit=collection_node)
        require_success(change, f"mig-reconfigure.yml on {collection_node}")
        evictions = [r for r in cluster.requests() if r.get("subresource") == "eviction" and r.get("verb") == "create"]
        after = workload_pods(cluster, collection_node)
        collection_evicted = len(set(before[collection_node]) - set(after))
        if workload_pods(cluster, seed_node) != before[seed_node]:
            raise BenchError(f"the collection's run, limited to {collection_node}, moved pods of {seed_node}")

        seed = seed_procedure(cluster, seed_node)
        seed_left = workload_pods(cluster, seed_node)
        seed["evicted"] = len(set(before[seed_node]) - set(seed_left))
    finally:
        cluster.down()

    ratio = f"{collection_evicted} : {seed['evicted']}"
    return {
        "figure": "pods_disrupted",
        "unit": "GPU pods evicted to change one GPU of an 8-GPU node holding 8 single-GPU pods",
        "change": "GPU 0: MIG off -> 7 x 1g.5gb; GPUs 1-7 unchanged (A100-SXM4-40GB, mixed strategy)",
        "collection": {"evicted": collection_evicted, "eviction_api_calls": len(evictions),
                       "evacuate_scope": "changed (default)",
                       "device_map": "kubelet PodResources API (gpuops.nvidia.gpu_pod_devices); no pod annotation",
                       "wall_s": rounded(change.wall_s, 1)},
        "seed_001": seed,
        "ratio": ratio,
        "target": "1 : 8",
        "notes": [
            "The seed-001 side applies DeepOps' NoSchedule + NoExecute taint; its evictions follow the "
            "Kubernetes taint-manager rule (pods without a matching toleration), played by the benchmark "
            "because the simulator has no taint manager.",
        ],
        "wall_s": rounded(time.perf_counter() - started, 1),
    }
