# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu_info, mig_config and mig_mode on the NVML simulator, in-process (see conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import gpuops_sim.nvml
import pytest
from gpuops_sim.node import systemd
from gpuops_sim.nvml.models import one_per_profile_table

# One model per profile table: models that share a table (A100 / A800, H100 / H800, ...) behave alike.
MIG_MODELS = one_per_profile_table()
A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"


def doc(*entries, name="c"):
    return {"version": "v1", "mig-configs": {name: list(entries)}}


def enabled(mig_devices, **extra):
    entry = {"devices": "all", "mig-enabled": True, "mig-devices": mig_devices}
    entry.update(extra)
    return entry


def apply(node, config, **args):
    args = dict({"config": config, "config_name": "c", "reset_command": node.reset_command}, **args)
    if config is None:
        del args["config"]
    check = args.pop("check", False)
    diff = args.pop("diff", False)
    return node.run("mig_config", args, check=check, diff=diff)


# --- gpu_info ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_gpu_info_names_every_profile_like_the_hardware(node, model):
    node.init(model.name, count=1, mig_enabled=True)
    result = node.run("gpu_info", {})
    gpu = result["gpus"][0]
    assert gpu["pci_device_id"] == "0x%08X" % model.pci_device_id
    assert gpu["mig"]["capable"] and gpu["mig"]["current"] and gpu["mig"]["pending"]
    offered = {p["name"]: p for p in gpu["mig"]["profiles"]}
    assert sorted(offered) == sorted(p.name for p in model.gi_profiles)
    for profile in model.gi_profiles:
        got = offered[profile.name]
        assert got["id"] == profile.id and got["instance_count"] == profile.instance_count
        assert [p["start"] for p in got["placements"]] == list(profile.placement_starts)
        assert got["free"] == profile.instance_count or profile.name.endswith(("+me", "+me.all"))


def test_gpu_info_contract_shape_with_instances_and_processes(node):
    node.init(A100, count=1, mig_enabled=True)
    apply(node, doc(enabled({"1g.5gb": 1})))
    shown = node.show()["gpus"][0]
    mig_uuid = shown["gpu_instances"][0]["compute_instances"][0]["device_uuid"]
    gpuops_sim.nvml.attach_process(node.path, mig_uuid, 4242, 1024)
    gpu = node.run("gpu_info", {})["gpus"][0]
    assert set(gpu) >= {"index", "uuid", "name", "pci_device_id", "pci_subsystem_id", "pci_bus_id", "memory_total_mib", "mig", "processes"}
    assert set(gpu["mig"]) >= {"capable", "current", "pending", "instances", "profiles"}
    instance = gpu["mig"]["instances"][0]
    assert set(instance) >= {"profile", "profile_id", "gi_id", "placement_start", "placement_size", "devices"}
    assert instance["devices"][0]["uuid"] == mig_uuid and instance["devices"][0]["profile"] == "1g.5gb"
    assert gpu["processes"] == [{"pid": 4242, "used_memory_mib": 1024, "gi_id": instance["gi_id"], "ci_id": 0}]
    assert gpu["pci_bus_id"] == shown["pci_bus_id"] and gpu["uuid"] == shown["uuid"]


def test_gpu_info_without_driver_returns_no_gpus(node, monkeypatch):
    import pynvml

    monkeypatch.delenv("GPUOPS_NVML_SIMULATOR")
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent")
    result = node.run("gpu_info", {})
    assert not result.get("failed") and result["gpus"] == [] and "NVML" in result["note"]


def no_libnvidia_ml(monkeypatch):
    """A node without the driver's library: the real pynvml finds no libnvidia-ml (NVMLError_LibraryNotFound)."""
    import pynvml

    monkeypatch.delenv("GPUOPS_NVML_SIMULATOR")
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent")


@pytest.mark.parametrize("missing", ["library", "driver"])
def test_mig_config_on_a_node_without_a_driver_fails_or_reports(node, monkeypatch, tmp_path, missing):
    if missing == "library":
        no_libnvidia_ml(monkeypatch)
    else:
        # The simulator's node without a loaded driver: its state file does not exist (NVML Driver Not Loaded).
        monkeypatch.setenv("GPUOPS_NVML_SIMULATOR", str(tmp_path / "no-driver.json"))
    args = {"config": doc(enabled({"1g.5gb": 7}), name="all-1g.5gb"), "config_name": "all-1g.5gb",
            "node_plan": {"strategy": "mixed", "node": "n1"}}
    failed = node.run("mig_config", args, check=True)
    assert failed["failed"] and failed["msg"].startswith("cannot open NVML (is the NVIDIA driver installed and loaded?)")
    assert failed["nvml_unavailable"]
    reported = node.run("mig_config", dict(args, driver_missing="report"), check=True)
    assert not reported.get("failed") and reported["changed"] is False
    assert reported["nvml_unavailable"] == failed["nvml_unavailable"]
    kept = reported["node_plan"]
    assert kept["gpu_count"] == 0 and kept["driver_version"] == "" and kept["changed"] is False
    assert kept["nvml_unavailable"] == reported["nvml_unavailable"] and kept["expected"]["errors"] == []
    # The document and the config name are still checked; outside check mode nothing is done either.
    bad = node.run("mig_config", dict(args, config_name="no-such-config", driver_missing="report"), check=True)
    assert bad["failed"] and "no-such-config" in bad["msg"]
    full = node.run("mig_config", {"config": args["config"], "config_name": "all-1g.5gb", "driver_missing": "report"})
    assert full["changed"] is False and full["changed_gpus"] == [] and full["observed"]["gpus"] == []
    assert full["config_name"] == "all-1g.5gb" and full["mig_devices"] == []
    info = node.run("gpu_info", {})
    assert info["gpus"] == [] and info["nvml_unavailable"] == reported["nvml_unavailable"]


def test_mig_config_reports_a_node_without_pynvml_yet_or_fails_naming_the_library(node, monkeypatch):
    from ansible_collections.gpuops.nvidia.plugins.modules import mig_config

    monkeypatch.setattr(mig_config, "HAS_PYNVML", False)
    args = {"config": doc(enabled({"1g.5gb": 7})), "config_name": "c", "node_plan": {}}
    failed = node.run("mig_config", args, check=True)
    assert failed["failed"] and "nvidia-ml-py" in failed["msg"]
    reported = node.run("mig_config", dict(args, driver_missing="report"), check=True)
    assert not reported.get("failed") and reported["changed"] is False
    assert reported["node_plan"]["nvml_unavailable"] == "the Python library pynvml (PyPI nvidia-ml-py) is not installed"


def test_mig_config_reports_nvml_available_on_a_node_with_a_driver(node):
    node.init("A100-SXM4-40GB", count=1)
    result = apply(node, doc(enabled({"1g.5gb": 7})), driver_missing="report", node_plan={}, check=True)
    assert result["nvml_unavailable"] == "" and result["node_plan"]["nvml_unavailable"] == ""
    assert result["node_plan"]["gpu_count"] == 1 and result["changed"] is True


def test_gpu_info_on_gpu_without_mig(node):
    node.init("Tesla T4", count=1)
    gpu = node.run("gpu_info", {})["gpus"][0]
    assert gpu["mig"]["capable"] is False and gpu["mig"]["profiles"] == [] and gpu["mig"]["instances"] == []


# --- mig_config: geometry tables ------------------------------------------------------------------


@pytest.mark.parametrize("model,profile", [(m, p) for m in MIG_MODELS for p in m.gi_profiles],
                         ids=lambda v: getattr(v, "name", None))
def test_every_profile_alone_up_to_its_maximum_then_idempotent(node, model, profile):
    node.init(model.name, count=1, mig_enabled=True)
    config = doc(enabled({profile.name: profile.instance_count}))
    first = apply(node, config)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] and node.layout() == {profile.name: profile.instance_count}
    assert len(first["mig_devices"][0]["devices"]) == profile.instance_count
    before = node.path.read_bytes()
    node.calls.clear()
    second = apply(node, config)
    assert second["changed"] is False and node.calls == [] and node.path.read_bytes() == before


def balanced(model):
    """2x1g + 1x2g + 1x3g on 7-slice parts, 2x1g + 1x2g on 4-slice parts (mig-parted's all-balanced)."""
    by_slices = {}
    for p in model.gi_profiles:
        if "+" not in p.name and "-" not in p.name and p.slice_count not in by_slices:
            by_slices[p.slice_count] = p.name
    wanted = {by_slices[1]: 2, by_slices[2]: 1}
    if 3 in by_slices:
        wanted[by_slices[3]] = 1
    return wanted


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_balanced_from_mig_disabled(node, model):
    node.init(model.name, count=2, mig_enabled=False)
    wanted = balanced(model)
    result = apply(node, doc(enabled(wanted)), diff=True)
    assert not result.get("failed"), result.get("msg")
    assert [g["index"] for g in result["changed_gpus"]] == [0, 1]
    assert node.layout(0) == dict(sorted(wanted.items())) and node.layout(1) == dict(sorted(wanted.items()))
    assert result["reset_required"] is False and result["reboot_required"] is False
    assert set(result["diff"]) == {"before", "after"}
    node.calls.clear()
    assert apply(node, doc(enabled(wanted)))["changed"] is False and node.calls == []


# --- mig_config: minimal change -------------------------------------------------------------------


def test_changes_only_the_delta_and_keeps_busy_instances(node):
    node.init(A100, count=2, mig_enabled=True)
    apply(node, doc(enabled({"1g.5gb": 7})))
    gpu0 = node.show()["gpus"][0]
    busy = gpu0["gpu_instances"][0]
    gpuops_sim.nvml.attach_process(node.path, busy["compute_instances"][0]["device_uuid"], 777, 512)
    untouched = node.show()["gpus"][1]
    node.calls.clear()
    second_gpu = {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}
    result = apply(node, doc(enabled({"1g.5gb": 3, "2g.10gb": 2}, devices=[0]), second_gpu))
    assert not result.get("failed"), result.get("msg")
    assert node.layout(0) == {"1g.5gb": 3, "2g.10gb": 2}
    after0 = node.show()["gpus"][0]
    assert busy["id"] in [gi["id"] for gi in after0["gpu_instances"]]
    assert node.show()["gpus"][1] == untouched
    assert [g["index"] for g in result["changed_gpus"]] == [0]
    assert node.calls.count("nvmlGpuInstanceDestroy") == 4
    # Order: compute instances, then GPU instances, are destroyed; GPU instances are created at
    # explicit placements; then one compute instance in each new GPU instance.
    assert node.calls == (["nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy"] * 4
                          + ["nvmlDeviceCreateGpuInstanceWithPlacement"] * 2 + ["nvmlGpuInstanceCreateComputeInstance"] * 2)


def test_check_mode_mutates_nothing(node):
    node.init(A100, count=1, mig_enabled=False)
    before = node.path.read_bytes()
    result = apply(node, doc(enabled({"3g.20gb": 2})), check=True, diff=True)
    assert result["changed"] and node.calls == [] and node.path.read_bytes() == before
    key = next(iter(result["diff"]["after"]))
    assert result["diff"]["after"][key]["layout"] == {"3g.20gb": {"count": 2, "placements": ["0:4", "4:4"]}}
    assert result["plan"]["gpus"][0]["set_mode"] is True


def test_boot_record_is_read_with_the_plan_and_never_written(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    record = tmp_path / "config.json"
    assert apply(node, doc(enabled({"3g.20gb": 2})), check=True, boot_record=str(record))["boot_record"] == {}
    assert not record.exists()
    record.write_text('{"config_name": "c", "installed_digest": "abc"}')
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record))
    assert result["changed"] and result["boot_record"] == {"config_name": "c", "installed_digest": "abc"}
    assert record.read_text() == '{"config_name": "c", "installed_digest": "abc"}'
    assert "boot_record" not in apply(node, doc(enabled({"3g.20gb": 2})))


@pytest.mark.parametrize("content,warning", [("{not json", "is not JSON"), ("[1, 2]", "does not hold a JSON object")])
def test_unusable_boot_record_reads_as_none_with_a_warning(node, tmp_path, content, warning):
    node.init(A100, count=1, mig_enabled=True)
    record = tmp_path / "config.json"
    record.write_text(content)
    result = apply(node, doc(enabled({"3g.20gb": 2})), check=True, boot_record=str(record))
    assert result["boot_record"] == {} and any(warning in w for w in result.get("warnings", []))


# --- mig_config: the boot record written in the run that applies -----------------------------------


def boot_setup(tmp_path):
    """A node root whose boot-time service files are installed: the record path and its settings."""
    unit = tmp_path / "etc/systemd/system/gpuops-mig-apply.service"
    applier = tmp_path / "usr/local/sbin/gpuops-mig-apply"
    for path in (unit, applier):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("installed\n")
    settings = {"unmatched_gpus": "leave", "reset_command": None, "files": [str(applier), str(unit)],
                "status_file": str(tmp_path / "var/lib/gpuops/mig/boot-status.json"), "unit": str(unit)}
    return tmp_path / "etc/gpuops/mig/config.json", settings


def test_boot_record_content_is_written_with_the_config_applied_then_left(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    record, settings = boot_setup(tmp_path)
    record.parent.mkdir(parents=True)
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=settings)
    assert not result.get("failed"), result["msg"]
    written = dict(settings, config_name="c", document=result["config"])
    assert result["changed"] and result["boot_record_written"] is True and result["boot_record"] == written
    assert json.loads(record.read_text()) == written
    assert oct(record.stat().st_mode & 0o777) == "0o644"
    # No temporary file left next to it.
    assert sorted(p.name for p in record.parent.iterdir()) == ["config.json"]
    # What the record names, read from the new record.
    assert result["boot_files"] == [hashlib.sha256(b"installed\n").hexdigest()] * 2
    assert result["boot_status"] == {} and result["boot_unit_enabled"] is False
    again = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=settings)
    assert again["changed"] is False and again["boot_record_written"] is False and again["boot_record"] == written


def test_boot_record_content_rewrites_a_stale_record_on_a_node_already_laid_out(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    record, settings = boot_setup(tmp_path)
    apply(node, doc(enabled({"3g.20gb": 2})))
    record.parent.mkdir(parents=True)
    record.write_text('{"config_name": "old"}')
    node.calls.clear()
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=settings, diff=True)
    assert node.calls == [] and result["changed"] and result["boot_record_written"]
    assert json.loads(record.read_text())["config_name"] == "c"
    record_diff = result["diff"][-1]
    assert record_diff["before"] == {"config_name": "old"} and record_diff["after"] == result["boot_record"]


def test_boot_record_content_in_check_mode_reports_and_writes_nothing(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    record, settings = boot_setup(tmp_path)
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=settings,
                   check=True, diff=True)
    assert result["changed"] and result["boot_record_written"] is True
    assert result["diff"][-1]["before"] == {} and result["diff"][-1]["after"]["config_name"] == "c"
    assert not record.exists() and node.calls == []


def test_boot_record_content_is_written_with_a_mode_change_left_pending(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    gpuops_sim.nvml.add_client(node.path, 0, "nvidia-persistenced")
    record, settings = boot_setup(tmp_path)
    result = apply(node, doc(enabled({"1g.5gb": 1})), allow_pending=True, boot_record=str(record),
                   boot_record_content=settings)
    assert result["reboot_required"] and result["boot_record_written"]
    assert json.loads(record.read_text())["document"] == result["config"]


def test_boot_record_content_is_not_written_when_the_apply_fails(node, tmp_path):
    node.init(A100, count=2, mig_enabled=True)
    gpuops_sim.nvml.add_fault(node.path, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=1, gpu=1)
    record, settings = boot_setup(tmp_path)
    result = apply(node, doc(enabled({"2g.10gb": 3})), boot_record=str(record), boot_record_content=settings)
    assert result["failed"] and not record.exists()


def test_boot_record_content_naming_a_file_not_installed_is_not_written(node, tmp_path):
    node.init(A100, count=1, mig_enabled=True)
    record, settings = boot_setup(tmp_path)
    settings["files"].append(str(tmp_path / "usr/local/lib/absent.py"))
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=settings)
    assert not result.get("failed") and result["boot_record_written"] is False and not record.exists()
    assert any("absent.py" in w for w in result["warnings"])


def test_boot_record_content_is_not_written_on_a_node_without_a_driver(node, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUOPS_NVML_SIMULATOR", str(tmp_path / "no-driver.json"))
    record, settings = boot_setup(tmp_path)
    result = apply(node, doc(enabled({"3g.20gb": 2})), driver_missing="report", boot_record=str(record),
                   boot_record_content=settings)
    assert result["nvml_unavailable"] and result["changed"] is False and result["boot_record_written"] is False
    assert not record.exists()


@pytest.mark.parametrize("content,fragment", [
    ({"config_name": "x"}, "config_name is filled by the module"),
    ({"document": {}}, "document is filled by the module"),
    ({"files": "/usr/local/sbin/gpuops-mig-apply"}, "files must be a list of paths"),
    ({"files": ["/a", 3]}, "files must be a list of paths"),
    ({"unit": ["x"]}, "unit must be a path"),
    ({"status_file": ""}, "status_file must be a path"),
])
def test_bad_boot_record_content_fails_clearly_and_changes_nothing(node, tmp_path, content, fragment):
    node.init(A100, count=1, mig_enabled=False)
    record = tmp_path / "config.json"
    before = node.path.read_bytes()
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record=str(record), boot_record_content=content)
    assert result["failed"] and "boot_record_content" in result["msg"] and fragment in result["msg"], result["msg"]
    assert node.calls == [] and node.path.read_bytes() == before and not record.exists()


def test_boot_record_content_needs_boot_record(node, tmp_path):
    node.init(A100, count=1, mig_enabled=False)
    result = apply(node, doc(enabled({"3g.20gb": 2})), boot_record_content={"unit": str(tmp_path / "u.service")})
    assert result["failed"] and "boot_record" in result["msg"] and node.calls == []


def test_boot_record_read_reports_whether_the_unit_is_enabled_as_systemctl_enables_it(node, tmp_path):
    node.init(A100, count=1, mig_enabled=True)
    record, settings = boot_setup(tmp_path)
    unit = Path(settings["unit"])
    unit.write_text("[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n"
                    "[Install]\nWantedBy=multi-user.target\nRequiredBy=kubelet.service\n")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(settings))

    def read():
        return apply(node, doc(enabled({"3g.20gb": 2})), check=True, boot_record=str(record))["boot_unit_enabled"]

    assert read() is False
    made = systemd.enable(str(tmp_path), unit.name)
    assert len(made) == 2 and read() is True
    # One link left (in kubelet.service.requires/) still counts, as systemctl is-enabled says.
    os.unlink(made[0])
    assert read() is True
    systemd.disable(str(tmp_path), unit.name)
    assert read() is False


# --- mig_config: bad input, nothing changes -------------------------------------------------------


@pytest.mark.parametrize("args,fragment", [
    ({"config": "version: v1\nmig-configs: [\n"}, "malformed YAML"),
    ({"config": {"version": "v2", "mig-configs": {"c": [{"devices": "all", "mig-enabled": False}]}}}, "unknown version"),
    ({"config": doc(enabled({"1g.5gb": -1}))}, "invalid count -1"),
    ({"config": doc(enabled({"1g.5gb": 1})), "config_name": "nope"}, "unknown named config 'nope'"),
    ({"config": doc(enabled({"1g.5gb": 1}, devices=[0, 5]))}, "GPU index 5 out of range"),
    ({"config": doc(enabled({"1g.5gb": 1})), "devices": [3]}, "GPU index 3 out of range"),
    ({"config": doc(enabled({"2g.20gb": 1}))}, "'2g.20gb' is not offered"),
    ({"config": doc(enabled({"3g.20gb": 2, "1g.5gb": 1}))}, "no placement"),
    ({"config": doc(enabled({"1g.5gb": 1}, foo=1))}, "unexpected field 'foo'"),
    ({"config_file": "/nonexistent/mig.yaml", "config": None}, "cannot read"),
    ({"config": doc(enabled({"1g.5gb": 1})), "reset_command": ["x", "{bogus}"]}, "reset_command"),
])
def test_bad_input_fails_clearly_and_changes_nothing(node, args, fragment):
    node.init(A100, count=2, mig_enabled=True)
    apply(node, doc(enabled({"7g.40gb": 1})))
    before = node.path.read_bytes()
    node.calls.clear()
    result = apply(node, args.pop("config"), **args)
    assert result["failed"] and fragment in result["msg"], result["msg"]
    assert node.calls == [] and node.path.read_bytes() == before


def test_in_use_instance_is_not_destroyed(node):
    node.init(A100, count=1, mig_enabled=True)
    apply(node, doc(enabled({"7g.40gb": 1})))
    uuid = node.show()["gpus"][0]["gpu_instances"][0]["compute_instances"][0]["device_uuid"]
    gpuops_sim.nvml.attach_process(node.path, uuid, 31337, 100)
    before = node.path.read_bytes()
    node.calls.clear()
    result = apply(node, doc(enabled({"3g.20gb": 2})))
    assert result["failed"] and "31337" in result["msg"] and node.calls == [] and node.path.read_bytes() == before


def test_nvml_error_mid_apply_reports_gpu_step_and_state(node):
    node.init(A100, count=2, mig_enabled=True)
    gpuops_sim.nvml.add_fault(node.path, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=1, gpu=1)
    result = apply(node, doc(enabled({"2g.10gb": 3})))
    assert result["failed"] and "GPU 1" in result["msg"]
    assert result["failed_gpu"]["index"] == 1 and result["failed_gpu"]["step"] == "change GPU instances"
    assert result["failed_gpu"]["state"]["mig"]["current"] is True
    assert [g["index"] for g in result["changed_gpus"]] == [0]
    assert node.layout(0) == {"2g.10gb": 3}
    retry = apply(node, doc(enabled({"2g.10gb": 3})))
    assert not retry.get("failed") and [g["index"] for g in retry["changed_gpus"]] == [1]
    assert node.layout(1) == {"2g.10gb": 3}


# --- mig_config: mode changes and pending -------------------------------------------------------


def test_pending_mode_fails_unless_allowed(node):
    node.init(A100, count=1, mig_enabled=False)
    gpuops_sim.nvml.add_client(node.path, 0, "nvidia-persistenced")
    result = apply(node, doc(enabled({"1g.5gb": 1})))
    assert result["failed"] and "pending" in result["msg"] and "Reboot" in result["msg"]
    # The failed run set the pending mode: it changed the GPU, and says so.
    assert result["changed"] is True and [g["index"] for g in result["changed_gpus"]] == [0]
    gpu = node.show()["gpus"][0]
    assert gpu["mig"] == {"capable": True, "current": False, "pending": True}
    allowed = apply(node, doc(enabled({"1g.5gb": 1})), allow_pending=True)
    assert not allowed.get("failed") and allowed["reset_required"] and allowed["reboot_required"]
    # The mode was pending already and the reset failed: this run changed nothing.
    assert allowed["changed"] is False and allowed["changed_gpus"] == [] and node.layout() == {}


def test_reset_applies_a_pending_mode_on_that_gpu_only(node, tmp_path):
    node.init(A100, count=2, mig_enabled=False)
    gpuops_sim.nvml.add_client(node.path, 0, "nvidia-persistenced")
    script = tmp_path / "reset.py"
    script.write_text(
        "import sys, gpuops_sim.nvml as n\n"
        "n.remove_client(sys.argv[1], int(sys.argv[2]))\n"
        "print(n.reset_gpu(sys.argv[1], int(sys.argv[2])))\n"
    )
    result = apply(node, doc(enabled({"1g.5gb": 2}, devices=[0])), reset_command=[sys.executable, str(script), str(node.path), "{index}"])
    assert not result.get("failed"), result["msg"]
    mode = result["modes"][0]
    assert mode["activation"] == "in use by another client" and mode["reset_attempted"] and mode["reset_succeeded"]
    assert node.layout(0) == {"1g.5gb": 2}
    assert node.show()["gpus"][1]["mig"]["current"] is False


def test_disable_destroys_instances_first(node):
    node.init(A100, count=1, mig_enabled=True)
    apply(node, doc(enabled({"1g.5gb": 7})))
    gpuops_sim.nvml.set_setting(node.path, "mig_disable_with_instances", "in_use")
    result = apply(node, doc({"devices": "all", "mig-enabled": False}))
    assert not result.get("failed"), result["msg"]
    assert node.show()["gpus"][0]["mig"]["current"] is False


def test_profiles_hidden_while_disabled_are_validated_after_enabling(node):
    node.init(A100, count=1, mig_enabled=False)
    gpuops_sim.nvml.set_setting(node.path, "profile_queries_need_mig", True)
    result = apply(node, doc(enabled({"3g.20gb": 2})))
    assert not result.get("failed"), result["msg"]
    assert any("validated after enabling" in w for w in result["warnings"])
    assert node.layout() == {"3g.20gb": 2}


def test_alternative_profile_name_is_accepted_with_a_warning(node):
    node.init("NVIDIA A100-SXM4-80GB", count=1, mig_enabled=True)
    result = apply(node, doc(enabled({"7g.79gb": 1})))
    assert not result.get("failed") and node.layout() == {"7g.80gb": 1}
    assert any("7g.79gb" in w for w in result["warnings"])


def test_unmatched_gpus_policy(node):
    node.init(A100, count=2, mig_enabled=True)
    config = doc(enabled({"1g.5gb": 1}, devices=[0]))
    left = apply(node, config)
    assert left["plan"]["unmatched_gpus"] == [1] and node.layout(1) == {}
    node.calls.clear()
    failed = apply(node, doc(enabled({"2g.10gb": 1}, devices=[0])), unmatched_gpus="fail")
    assert failed["failed"] and "GPU 1" in failed["msg"] and node.calls == []


# --- mig_mode -------------------------------------------------------------------------------------


def mode(node, **args):
    check = args.pop("check", False)
    return node.run("mig_mode", dict({"reset_command": node.reset_command}, **args), check=check, diff=True)


def test_mig_mode_enable_disable_idempotent(node):
    node.init(A100, count=2)
    result = mode(node, state="enabled", devices=[1])
    assert result["changed"] and [g["index"] for g in result["gpus"]] == [1]
    assert result["gpus"][0]["current"] and result["gpus"][0]["activation"] == "success"
    assert [g["mig"]["current"] for g in node.show()["gpus"]] == [False, True]
    node.calls.clear()
    again = mode(node, state="enabled", devices=[1])
    assert again["changed"] is False and node.calls == []


def test_mig_mode_check_mode(node):
    node.init(H100, count=1)
    before = node.path.read_bytes()
    result = mode(node, state="enabled", check=True)
    assert result["changed"] and node.calls == [] and node.path.read_bytes() == before
    assert result["diff"]["after"]["0"]["pending"] is True


def test_mig_mode_disable_destroys_instances_only_where_mode_changes(node):
    node.init(A100, count=2, mig_enabled=True)
    apply(node, doc(enabled({"7g.40gb": 1})))
    result = mode(node, state="disabled", devices=[0])
    assert result["changed"] and node.layout(1) == {"7g.40gb": 1}
    assert node.show()["gpus"][0]["mig"]["current"] is False


def test_mig_mode_refuses_reset_with_processes_unless_forced(node):
    node.init(A100, count=1)
    gpuops_sim.nvml.attach_process(node.path, node.show()["gpus"][0]["uuid"], 555, 100)
    result = mode(node, state="enabled")
    assert result["reset_required"] and not result["gpus"][0]["reset_attempted"]
    assert any("555" in w for w in result["warnings"])
    forced = mode(node, state="enabled", force=True)
    assert forced["gpus"][0]["reset_attempted"]


def test_mig_mode_reports_reboot_when_reset_cannot_apply(node):
    node.init(A100, count=1)
    gpuops_sim.nvml.set_setting(node.path, "reset_policy", "reboot")
    result = mode(node, state="enabled")
    assert result["changed"] and result["reset_required"] and result["reboot_required"]
    assert result["gpus"][0]["activation"] == "reset required"


def test_mig_mode_bad_index_changes_nothing(node):
    node.init(A100, count=1)
    before = node.path.read_bytes()
    result = mode(node, state="enabled", devices=[2])
    assert result["failed"] and "out of range" in result["msg"] and node.calls == [] and node.path.read_bytes() == before


def test_mig_mode_skips_gpus_without_mig(node):
    node.init("Tesla T4", count=1)
    result = mode(node, state="enabled")
    assert result["changed"] is False and result["skipped_gpus"] == [0]
