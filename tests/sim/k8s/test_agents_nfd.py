"""GPU feature discovery's labels reach a node only through Node Feature Discovery: a feature file on
the node or NodeFeature objects, which the simulated nfd-worker and nfd-master turn into labels."""

from __future__ import annotations

import datetime
import os

from hypothesis import given, strategies as st

from gpuops_sim.k8s import agents_nfd as nfd
from gpuops_sim.k8s import workload as manifests
from test_agents import NODE, NS, Sim, wait_for

PRODUCT = "nvidia.com/gpu.product"
PCI = "feature.node.kubernetes.io/pci-10de.present"


def feature_file(sim: Sim, node: str = NODE) -> str:
    return os.path.join(sim.dir, "nodes", f"{node}-root", "etc/kubernetes/node-feature-discovery/features.d/gfd")


def test_without_nfd_gfd_writes_its_file_and_no_label_reaches_the_node(tmp_path):
    sim = Sim(tmp_path, gpus=2)
    try:
        sim.install("none", nfd=False)
        wait_for(lambda: os.path.exists(feature_file(sim)), what="GFD's feature file")
        with open(feature_file(sim), encoding="utf-8") as handle:
            written = nfd.parse_feature_file(handle.read())
        assert written[PRODUCT] == "NVIDIA-A100-SXM4-40GB" and "nvidia.com/gfd.timestamp" in written
        sim.agents.sync()
        assert PRODUCT not in sim.labels() and PCI not in sim.labels()
        assert sim.api.list("nodefeatures") == []

        # NFD arrives later: the labels follow, with NFD's own PCI label and its record of what it set.
        for kind, obj in manifests.nfd_objects():
            sim.api.create(kind, obj["metadata"].get("namespace"), obj)
        labels = wait_for(lambda: sim.labels() if PRODUCT in sim.labels() else None, what="labels through NFD")
        assert labels[PCI] == "true"
        recorded = sim.node()["metadata"]["annotations"][nfd.FEATURE_LABELS_ANNOTATION].split(",")
        assert "pci-10de.present" in recorded and PRODUCT in recorded
        (worker_feature,) = sim.api.list("nodefeatures")
        assert worker_feature["metadata"]["name"] == NODE
        assert worker_feature["metadata"]["labels"] == {nfd.NODE_NAME_LABEL: NODE}
        master = sim.api.get("deployments", manifests.NFD_NAMESPACE, "nfd-master")
        assert master["status"]["readyReplicas"] == 1
    finally:
        sim.agents.stop()


def test_labels_whose_features_disappear_are_removed_and_others_kept(tmp_path):
    sim = Sim(tmp_path, gpus=2)
    try:
        sim.api.merge_patch("nodes", None, NODE, {"metadata": {"labels": {"team": "ml", "nvidia.com/gpu.count": "stale"}}})
        sim.install("none")
        labels = wait_for(lambda: sim.labels() if sim.labels().get("nvidia.com/gpu.count") == "2" else None,
                          what="GFD's labels")
        assert labels[PRODUCT] == "NVIDIA-A100-SXM4-40GB"
        # GFD stops on the node (its deploy label turned off): it removes its file, NFD its labels.
        sim.api.merge_patch("nodes", None, NODE, {"metadata": {"labels": {"nvidia.com/gpu.deploy.gpu-feature-discovery": "false"}}})
        wait_for(lambda: PRODUCT not in sim.labels(), what="GFD's labels removed")
        assert not os.path.exists(feature_file(sim))
        labels = sim.labels()
        # NFD removes only what it set: NFD's own PCI label stays, a person's label is never touched.
        assert labels[PCI] == "true" and labels["team"] == "ml" and "nvidia.com/gpu.count" not in labels
        assert "nvidia.com/gpu.present" in labels
    finally:
        sim.agents.stop()


def test_gfd_with_the_node_feature_api_publishes_a_nodefeature_object(tmp_path):
    sim = Sim(tmp_path, gpus=2)
    try:
        sim.install("none")
        sim.api.delete("daemonsets", NS, "gpu-feature-discovery")
        gfd = manifests.gfd_daemonset()
        gfd["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "USE_NODE_FEATURE_API", "value": "true"})
        sim.api.create("daemonsets", NS, gfd)
        wait_for(lambda: sim.api.get("nodefeatures", NS, f"nvidia-features-for-{NODE}"), what="GFD's NodeFeature")
        labels = wait_for(lambda: sim.labels() if PRODUCT in sim.labels() else None, what="labels through NFD")
        assert labels[PCI] == "true"
        published = sim.api.get("nodefeatures", NS, f"nvidia-features-for-{NODE}")
        assert published["metadata"]["labels"] == {nfd.NODE_NAME_LABEL: NODE}
        assert published["spec"]["labels"][PRODUCT] == "NVIDIA-A100-SXM4-40GB"
        assert [ref["kind"] for ref in published["metadata"]["ownerReferences"]] == ["DaemonSet"]
        assert not os.path.exists(feature_file(sim))
    finally:
        sim.agents.stop()


def test_gfd_with_the_node_feature_api_but_no_crd_crash_loops(tmp_path):
    from gpuops_sim.k8s.agents_api import MemoryApi

    class NoCrdApi(MemoryApi):
        def create(self, kind, namespace, obj):
            if kind == "nodefeatures":
                raise LookupError('the server could not find the requested resource (post nodefeatures.nfd.k8s-sigs.io)')
            return super().create(kind, namespace, obj)

    sim = Sim(tmp_path, gpus=1)
    sim.agents.stop()
    sim.api = NoCrdApi()
    sim.api.create("nodes", None, manifests.node_manifest(NODE, "sim-a100-x1"))
    from gpuops_sim.k8s.agents import AgentSettings, Agents
    from gpuops_sim.k8s.cluster import state_path_for
    sim.agents = Agents(sim.api, state_path_for(sim.dir), AgentSettings(plugin_delay=0.05, crash_backoff=0.1),
                        node_root=lambda node: f"{sim.dir}/nodes/{node}-root")
    sim.agents.start()
    try:
        gfd = manifests.gfd_daemonset()
        gfd["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "USE_NODE_FEATURE_API", "value": "true"})
        sim.api.create("configmaps", NS, manifests.plugin_config_map({"default": manifests.plugin_config("none")}))
        sim.api.create("daemonsets", NS, gfd)

        def waiting():
            for pod in sim.api.list("pods"):
                for status in (pod.get("status") or {}).get("containerStatuses") or []:
                    if "waiting" in status.get("state", {}):
                        return status
            return None
        status = wait_for(waiting, what="GFD crash-looping")
        assert "failed to publish NodeFeature object" in status["lastState"]["terminated"]["message"]
    finally:
        sim.agents.stop()


# --- the pure parts ---------------------------------------------------------------------------

def test_feature_file_directives_and_values():
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    text = ("# a comment\nplain\nkey=value\n# +no-label\nhidden=1\nshown=2\n"
            "# +expiry-time=2025-12-31T00:00:00Z\nexpired=yes\n")
    assert nfd.parse_feature_file(text, now) == {"plain": "true", "key": "value", "shown": "2"}


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9.]{0,20}/[a-z][a-z0-9.-]{0,20}", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True), max_size=20))
def test_a_feature_file_reads_back_what_gfd_wrote(labels):
    assert nfd.parse_feature_file(nfd.format_feature_file(labels)) == labels


def test_host_paths_follow_the_deepest_hostpath_mount():
    spec = {"volumes": [{"name": "etc", "hostPath": {"path": "/etc"}},
                        {"name": "out", "hostPath": {"path": "/var/features"}},
                        {"name": "cm", "configMap": {"name": "conf"}}]}
    container = {"volumeMounts": [{"name": "etc", "mountPath": "/host-etc"}, {"name": "out", "mountPath": "/host-etc/nfd"},
                                  {"name": "cm", "mountPath": "/conf"}]}
    assert nfd.host_path(spec, container, "/host-etc/nfd/gfd") == "/var/features/gfd"
    assert nfd.host_path(spec, container, "/host-etc/os-release") == "/etc/os-release"
    assert nfd.host_path(spec, container, "/conf/x") is None and nfd.host_path(spec, container, "/tmp/gfd") is None
    assert nfd.config_map_mounted_at(spec, container, "/conf/") == "conf"


def test_gfd_output_mode_from_flag_environment_or_its_version():
    image = "nvcr.io/nvidia/k8s-device-plugin:"
    assert nfd.gfd_uses_node_feature_api({"image": image + "v0.19.3"})  # the default since v0.19
    assert not nfd.gfd_uses_node_feature_api({"image": image + "v0.17.0"})
    assert not nfd.gfd_uses_node_feature_api({"image": image + "v0.19.3", "env": [{"name": "USE_NODE_FEATURE_API", "value": "false"}]})
    assert nfd.gfd_uses_node_feature_api({"image": image + "v0.17.0", "args": ["--use-node-feature-api"]})
    assert not nfd.gfd_uses_node_feature_api({"image": image + "v0.19.3", "args": ["--use-node-feature-api=false"]})
    assert nfd.gfd_output_file({"args": ["-o", "/out/x"]}) == "/out/x"
    assert nfd.gfd_output_file({}) == "/etc/kubernetes/node-feature-discovery/features.d/gfd"


def test_master_merges_prefixes_filters_and_removes_only_its_own_labels():
    objects = [nfd.node_feature("nvidia-features-for-n", "gpu", "n", {"nvidia.com/gpu.count": "8", "kubernetes.io/os": "x"}),
               nfd.node_feature("n", "nfd", "n", {"pci-10de.present": "true", "nvidia.com/gpu.count": "1"})]
    labels = nfd.merged_labels(objects, "nfd")
    # The master's own namespace first, then others by name: GFD's object wins; kubernetes.io is refused.
    assert labels == {PCI: "true", "nvidia.com/gpu.count": "8"}
    node = {"metadata": {"labels": {"team": "ml", "nvidia.com/old": "1", PCI: "true"},
                         "annotations": {nfd.FEATURE_LABELS_ANNOTATION: "nvidia.com/old,pci-10de.present"}}}
    patch = nfd.node_patch(node, labels)
    assert patch["metadata"]["labels"] == {"nvidia.com/gpu.count": "8", "nvidia.com/old": None}
    assert patch["metadata"]["annotations"] == {nfd.FEATURE_LABELS_ANNOTATION: "nvidia.com/gpu.count,pci-10de.present"}
    done = {"metadata": {"labels": {**node["metadata"]["labels"], "nvidia.com/gpu.count": "8"},
                         "annotations": {nfd.FEATURE_LABELS_ANNOTATION: "nvidia.com/gpu.count,pci-10de.present"}}}
    del done["metadata"]["labels"]["nvidia.com/old"]
    assert nfd.node_patch(done, labels) == {}


def test_worker_pci_labels_follow_its_config():
    devices = nfd.gpu_pci_devices({"gpus": [{"pci_device_id": "0x20B010DE"}]})
    assert devices[0]["vendor"] == "10de" and devices[0]["device"] == "20b0" and devices[0]["class"] == "0302"
    assert nfd.pci_labels(devices, *nfd.worker_pci_config(None)) == {"pci-0302_10de.present": "true"}
    conf = "sources:\n  pci:\n    deviceClassWhitelist: ['0300', '0302']\n    deviceLabelFields: [vendor]\n"
    assert nfd.pci_labels(devices, *nfd.worker_pci_config(conf)) == {"pci-10de.present": "true"}
    assert nfd.pci_labels(devices, ("02",), ("vendor",)) == {}
