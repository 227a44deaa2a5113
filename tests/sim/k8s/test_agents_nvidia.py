"""The simulated device plugin and GFD, from NVML state dicts shaped like ``gpuops_sim.nvml.show``."""

from __future__ import annotations

import pytest

from gpuops_sim.k8s import agents_nvidia as nv

A100 = "NVIDIA A100-SXM4-40GB"
PROFILES = {  # name: (profile id, slices, memory MiB, SMs)
    "1g.5gb": (19, 1, 4864, 14),
    "2g.10gb": (14, 2, 9856, 28),
    "3g.20gb": (9, 3, 19968, 42),
    "7g.40gb": (0, 7, 40192, 98),
}


def gpu(index: int, profiles: list[str] | None = None, mig: bool | None = None, name: str = A100) -> dict:
    uuid = f"GPU-{index:08x}-0000-0000-0000-000000000000"
    instances = []
    for n, profile in enumerate(profiles or []):
        pid, slices, memory, sms = PROFILES[profile]
        gi_id = n + 1
        instances.append({
            "id": gi_id, "profile_id": pid, "profile": profile, "placement": {"start": n, "size": slices},
            "memory_mib": memory, "multiprocessors": sms, "slices": slices,
            "compute_instances": [{"id": 0, "profile_id": 0, "profile": profile, "multiprocessors": sms,
                                   "device_uuid": f"MIG-{index:04x}{gi_id:04x}-0000-0000-0000-000000000000"}],
        })
    enabled = bool(profiles) if mig is None else mig
    return {"index": index, "uuid": uuid, "name": name, "pci_device_id": "0x20B010DE",
            "pci_bus_id": f"00000000:{index:02X}:00.0", "memory_total_mib": 40960,
            "mig": {"capable": True, "current": enabled, "pending": enabled},
            "gpu_instances": instances, "processes": []}


def node(gpus: list[dict]) -> dict:
    return {"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": gpus}


ALL_1G = node([gpu(i, ["1g.5gb"] * 7) for i in range(8)])
BALANCED = node([gpu(i, ["3g.20gb", "2g.10gb", "1g.5gb"]) for i in range(2)])


def counts(inventory: dict[str, list[str]]) -> dict[str, int]:
    return {name: len(ids) for name, ids in inventory.items()}


# --- device plugin ---

def test_single_strategy_advertises_every_mig_device_as_gpu():
    assert counts(nv.plugin_inventory(ALL_1G, nv.PluginConfig("single"))) == {"nvidia.com/gpu": 56}


def test_mixed_strategy_names_resources_by_profile():
    assert counts(nv.plugin_inventory(ALL_1G, nv.PluginConfig("mixed"))) == {"nvidia.com/mig-1g.5gb": 56}
    assert counts(nv.plugin_inventory(BALANCED, nv.PluginConfig("mixed"))) == {
        "nvidia.com/mig-1g.5gb": 2, "nvidia.com/mig-2g.10gb": 2, "nvidia.com/mig-3g.20gb": 2}


def test_none_strategy_counts_whole_gpus_even_with_mig_on():
    assert counts(nv.plugin_inventory(ALL_1G, nv.PluginConfig("none"))) == {"nvidia.com/gpu": 8}


def test_single_strategy_with_mixed_profiles_crashes_with_the_plugin_message():
    with pytest.raises(nv.PluginError, match="more than one MIG device type present on node"):
        nv.plugin_inventory(BALANCED, nv.PluginConfig("single"))


def test_single_strategy_with_empty_mig_gpu_crashes():
    with pytest.raises(nv.PluginError, match="device 1 has no MIG devices configured"):
        nv.plugin_inventory(node([gpu(0, ["1g.5gb"]), gpu(1, [], mig=True)]), nv.PluginConfig("single"))


def test_single_strategy_with_mig_and_full_gpus_crashes():
    with pytest.raises(nv.PluginError, match="same migEnabled value"):
        nv.plugin_inventory(node([gpu(0, ["1g.5gb"]), gpu(1)]), nv.PluginConfig("single"))


def test_mixed_strategy_serves_full_gpus_beside_mig_ones():
    inventory = nv.plugin_inventory(node([gpu(0, ["1g.5gb"]), gpu(1), gpu(2, [], mig=True)]), nv.PluginConfig("mixed"))
    assert counts(inventory) == {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.5gb": 1}


def test_time_slicing_multiplies_and_can_rename():
    state = node([gpu(i) for i in range(8)])
    plain = nv.parse_config_file("version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                                 "    - name: nvidia.com/gpu\n      replicas: 4\n")
    inventory = nv.plugin_inventory(state, plain)
    assert counts(inventory) == {"nvidia.com/gpu": 32}
    assert {nv.device_uuid(d) for d in inventory["nvidia.com/gpu"]} == {g["uuid"] for g in state["gpus"]}
    renamed = nv.parse_config_file("version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n"
                                   "    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n")
    assert counts(nv.plugin_inventory(state, renamed)) == {"nvidia.com/gpu.shared": 32}


# --- configuration ---

def _plugin_spec(env=None, volume=True):
    container = {"name": "nvidia-device-plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                 "volumeMounts": [{"name": "config", "mountPath": "/config"}] if volume else []}
    spec = {"containers": [container], "volumes": [{"name": "config", "configMap": {"name": "plugin-config"}}]}
    return spec, container


def test_config_label_picks_the_configmap_key_then_default_then_only_key():
    spec, container = _plugin_spec(env={"DEFAULT_CONFIG": "b"})
    data = {"a": "version: v1\nflags:\n  migStrategy: mixed\n", "b": "version: v1\nflags:\n  migStrategy: single\n"}
    maps = {"plugin-config": data}
    assert nv.resolve_config(spec, container, maps, {nv.CONFIG_LABEL: "a"}).mig_strategy == "mixed"
    assert nv.resolve_config(spec, container, maps, {}).mig_strategy == "single"
    spec, container = _plugin_spec()
    assert nv.resolve_config(spec, container, {"plugin-config": {"only": data["a"]}}, {}).mig_strategy == "mixed"
    with pytest.raises(nv.PluginError, match="unable to select"):
        nv.resolve_config(spec, container, maps, {})


def test_env_strategy_overrides_the_file_and_defaults_to_none():
    spec, container = _plugin_spec(env={"MIG_STRATEGY": "single"})
    maps = {"plugin-config": {"x": "version: v1\nflags:\n  migStrategy: mixed\n"}}
    assert nv.resolve_config(spec, container, maps, {}).mig_strategy == "single"
    spec, container = _plugin_spec(volume=False)
    assert nv.resolve_config(spec, container, {}, {}).mig_strategy == "none"
    spec, container = _plugin_spec(env={"MIG_STRATEGY": "bogus"}, volume=False)
    with pytest.raises(nv.PluginError, match="bogus"):
        nv.resolve_config(spec, container, {}, {})


@pytest.mark.parametrize(("container", "role"), [
    ({"image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}, nv.ROLE_DEVICE_PLUGIN),
    ({"image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", "command": ["gpu-feature-discovery"]}, nv.ROLE_GFD),
    ({"image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", "args": ["config-manager"]}, None),
    ({"image": "registry:5000/nvidia/gpu-feature-discovery@sha256:abc"}, nv.ROLE_GFD),
    ({"image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5-3.4.0-ubuntu22.04"}, nv.ROLE_DCGM_EXPORTER),
    ({"image": "busybox"}, None),
])
def test_container_roles(container, role):
    assert nv.container_role(container) == role


# --- GPU feature discovery ---

def test_gfd_single_labels_follow_the_seed_table():
    labels = nv.gfd_labels(ALL_1G, nv.PluginConfig("single"))
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels["nvidia.com/gpu.count"] == "56"
    assert labels["nvidia.com/gpu.memory"] == "4864"
    assert labels["nvidia.com/gpu.multiprocessors"] == "14"
    assert labels["nvidia.com/gpu.slices.gi"] == "1"
    assert labels["nvidia.com/gpu.slices.ci"] == "1"
    assert labels["nvidia.com/gpu.engines.copy"] == "1"
    assert labels["nvidia.com/gpu.engines.decoder"] == "0"
    assert labels["nvidia.com/gpu.replicas"] == "1"
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/mig.capable"] == "true"
    assert labels["nvidia.com/gpu.family"] == "ampere"
    assert labels["nvidia.com/gpu.compute.major"] == "8"
    assert labels["nvidia.com/cuda.driver.major"] == "550"
    assert labels["nvidia.com/cuda.driver.minor"] == "54"
    assert labels["nvidia.com/cuda.driver.rev"] == "15"
    assert labels["nvidia.com/cuda.runtime.major"] == "12"
    assert labels["nvidia.com/cuda.runtime.minor"] == "4"


def test_gfd_single_with_mixed_layout_is_invalid():
    labels = nv.gfd_labels(BALANCED, nv.PluginConfig("single"))
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-INVALID"
    assert labels["nvidia.com/gpu.count"] == "0"
    assert labels["nvidia.com/gpu.memory"] == "0"


def test_gfd_mixed_labels_per_profile_and_keeps_full_gpu_labels():
    labels = nv.gfd_labels(BALANCED, nv.PluginConfig("mixed"))
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.memory"] == "40960"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["nvidia.com/mig-1g.5gb.count"] == "2"
    assert labels["nvidia.com/mig-1g.5gb.memory"] == "4864"
    assert labels["nvidia.com/mig-2g.10gb.engines.copy"] == "2"
    assert labels["nvidia.com/mig-2g.10gb.engines.decoder"] == "1"
    assert labels["nvidia.com/mig-3g.20gb.multiprocessors"] == "42"
    assert labels["nvidia.com/mig-3g.20gb.slices.gi"] == "3"
    assert labels["nvidia.com/mig-3g.20gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"


def test_gfd_none_has_no_mig_strategy_label():
    labels = nv.gfd_labels(node([gpu(i) for i in range(8)]), nv.PluginConfig("none"))
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "none"
    assert "nvidia.com/mig.strategy" not in labels


def test_gfd_time_slicing_marks_shared_product_unless_renamed():
    state = node([gpu(i) for i in range(8)])
    shared = nv.PluginConfig("none", (nv.SharedResource("nvidia.com/gpu", 4),))
    labels = nv.gfd_labels(state, shared)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-SHARED"
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    renamed = nv.PluginConfig("none", (nv.SharedResource("nvidia.com/gpu", 4, "nvidia.com/gpu.shared"),))
    assert nv.gfd_labels(state, renamed)["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"


def test_label_changes_remove_stale_owned_labels_only():
    current = {"nvidia.com/mig-1g.5gb.count": "7", "nvidia.com/mig.config": "all-1g.5gb", "x": "y"}
    patch = nv.label_changes(current, {"nvidia.com/gpu.count": "8"},
                             {k for k in current if nv.is_gfd_label(k)})
    assert patch == {"nvidia.com/gpu.count": "8", "nvidia.com/mig-1g.5gb.count": None}
