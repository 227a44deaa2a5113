# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared reconcile (read → plan → reset blockers → apply) and the boot applier's files, on
the NVML simulator: what both entry points, mig_config and gpuops-mig-apply, run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.boot import (
    file_digests, read_json_object, status_record, unit_enabled, write_json_atomic,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reconcile import (
    apply_reading, mode_changes, read_and_plan, reset_blockers,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import parse_spec
from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import open_nvml

from gpuops_sim import nvml as sim
from gpuops_sim.node import systemd as sim_systemd
from gpuops_sim.nvml import state as sim_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
APPLIER = os.path.join(REPO, "roles", "mig", "files", "gpuops-mig-apply")
CONFIG = {"version": "v1", "mig-configs": {"all-3g": [{"devices": "all", "mig-enabled": True,
                                                       "mig-devices": {"3g.40gb": 2}}]}}


class Host:
    """systemctl for the blocking services, and the reset command, on the simulated node."""

    def __init__(self, path, active=()):
        self.path = path
        self.active = set(active)
        self.commands = []

    def run(self, argv):
        self.commands.append(" ".join(argv))
        if argv[0] == "systemctl":
            verb, name = argv[1], argv[-1]
            if verb == "is-active":
                return (0 if name in self.active else 3), "", ""
            (self.active.discard if verb == "stop" else self.active.add)(name)
            sim.set_service(self.path, name, verb == "start") if name == "nvidia-persistenced" else None
            return 0, "", ""
        try:
            return 0, "\n".join(sim_state.reset_gpus(self.path, [int(argv[-1])])), ""
        except sim_state.ResetError as exc:
            return exc.exit_code, "", str(exc)


@pytest.fixture
def ampere(tmp_path):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "A100-80GB", 2, node_name="n")
    sim.set_service(path, "nvidia-persistenced", True)
    nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": path})
    yield path, nvml
    nvml.close()


def entries():
    return parse_spec(CONFIG).select("all-3g")


def test_a_mode_change_is_applied_with_the_blockers_cleared_and_restored(ampere):
    path, nvml = ampere
    name, chosen = entries()
    reading = read_and_plan(nvml, name, chosen)
    assert mode_changes(reading.plan)
    host = Host(path, active={"nvidia-persistenced"})
    blockers = reset_blockers(host.run, reading.plan, ["nvidia-persistenced", "nvidia-dcgm"], ["nvidia_drm"], None)
    outcome = apply_reading(nvml, reading, chosen, host.run, ["nvidia-smi", "-r", "-i", "{index}"], blockers, False)
    assert outcome.failure is None and not outcome.pending
    assert [g["index"] for g in outcome.applied.changed_gpus] == [0, 1]
    assert outcome.blockers["services_stopped"] == ["nvidia-persistenced"]
    assert outcome.blockers["services_restarted"] == ["nvidia-persistenced"]
    stop = host.commands.index("systemctl stop nvidia-persistenced")
    first_reset = next(i for i, c in enumerate(host.commands) if c.startswith("nvidia-smi"))
    assert stop < first_reset < host.commands.index("systemctl start nvidia-persistenced")
    assert not read_and_plan(nvml, name, chosen).plan.changed


def test_a_failed_apply_still_restores_the_services(ampere):
    path, nvml = ampere
    name, chosen = entries()
    reading = read_and_plan(nvml, name, chosen)
    sim.add_fault(path, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=0)
    host = Host(path, active={"nvidia-persistenced"})
    blockers = reset_blockers(host.run, reading.plan, ["nvidia-persistenced"], [], None)
    outcome = apply_reading(nvml, reading, chosen, host.run, ["nvidia-smi", "-r", "-i", "{index}"], blockers, False)
    assert outcome.applied is None and outcome.failure is not None
    assert outcome.failure.index == 0
    assert host.active == {"nvidia-persistenced"}
    assert outcome.blockers["services_restarted"] == ["nvidia-persistenced"]


def test_no_blockers_without_a_mode_change(ampere):
    _path, nvml = ampere
    name, chosen = parse_spec({"version": "v1", "mig-configs": {"off": [{"devices": "all", "mig-enabled": False}]}}).select("off")
    reading = read_and_plan(nvml, name, chosen)
    assert reset_blockers(lambda argv: (0, "", ""), reading.plan, ["x"], ["y"], None) is None


def test_json_files_read_with_the_reason_when_unusable(tmp_path):
    assert read_json_object(str(tmp_path / "absent.json")) == ({}, None)
    (tmp_path / "list.json").write_text("[1]")
    assert "JSON object" in read_json_object(str(tmp_path / "list.json"))[1]
    (tmp_path / "bad.json").write_text("{")
    assert "not JSON" in read_json_object(str(tmp_path / "bad.json"))[1]
    record = status_record("failed", 1, "why", "c", "b", "t")
    write_json_atomic(str(tmp_path / "deep" / "status.json"), record)
    assert read_json_object(str(tmp_path / "deep" / "status.json")) == (record, None)
    assert oct(os.stat(tmp_path / "deep" / "status.json").st_mode & 0o777) == "0o644"


UNIT_NAME = "gpuops-mig-apply.service"
# Directories under etc/systemd/system: where systemctl enable links a unit, and others it does not read.
LINK_DIRECTORIES = ["multi-user.target.wants", "kubelet.service.requires", "kubelet.service.d", "other.target.wants"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.dictionaries(st.sampled_from(LINK_DIRECTORIES), st.sampled_from([UNIT_NAME, "other.service"]), max_size=4),
       dangling=st.booleans())
def test_unit_enabled_reads_the_disk_as_systemctl_is_enabled(tmp_path_factory, links, dangling):
    root = tmp_path_factory.mktemp("root")
    base = root / "etc/systemd/system"
    base.mkdir(parents=True)
    if not dangling:
        (base / UNIT_NAME).write_text("[Install]\nWantedBy=multi-user.target\n")
    for directory, name in links.items():
        (base / directory).mkdir()
        os.symlink(os.path.join("..", name), str(base / directory / name))
    assert unit_enabled(str(base / UNIT_NAME)) == sim_systemd.is_enabled(str(root), UNIT_NAME)
    assert unit_enabled(str(base / UNIT_NAME)) == any(
        name == UNIT_NAME and directory.endswith((".wants", ".requires")) for directory, name in links.items())


def test_unit_enabled_without_the_unit_directory_is_false(tmp_path):
    assert unit_enabled(str(tmp_path / "absent/etc/systemd/system" / UNIT_NAME)) is False


@pytest.mark.parametrize("contents", [[], [b""], [b"x" * 65536, b"y" * 65537], [os.urandom(200000), b"\0\xff"]],
                         ids=["none", "empty", "chunk-edges", "binary"])
def test_file_digests_are_sha256_of_each_file_and_none_when_absent(tmp_path, contents):
    directory = tmp_path
    paths = []
    for index, content in enumerate(contents):
        path = directory / str(index)
        path.write_bytes(content)
        paths.append(str(path))
    paths.append(str(directory / "absent"))
    assert file_digests(paths) == [hashlib.sha256(c).hexdigest() for c in contents] + [None]


def run_applier(tmp_path, record, state_path):
    config = tmp_path / "config.json"
    if record is not None:
        config.write_text(json.dumps(record))
    status = tmp_path / "status.json"
    env = dict(os.environ, GPUOPS_MIG_LIBRARY=os.path.join(REPO, ".collections"), GPUOPS_NVML_SIMULATOR=state_path,
               PATH=os.pathsep.join([os.path.join(REPO, "gpuops_sim", "nvml", "bin"), os.environ["PATH"]]))
    done = subprocess.run([sys.executable, APPLIER, "--config", str(config), "--status", str(status),
                           "--boot-id", str(tmp_path / "no-boot-id")], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    return done, json.loads(status.read_text())


def test_the_applier_applies_reports_and_leaves_its_status(tmp_path):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "A100-80GB", 1, node_name="n")
    record = {"config_name": "all-3g", "document": CONFIG, "reset_blocking_services": [], "reset_blocking_kernel_modules": []}
    done, status = run_applier(tmp_path, record, path)
    assert done.returncode == 0, done.stderr
    assert status["result"] == "applied" and status["config_name"] == "all-3g" and status["boot_id"] is None
    assert [gi["profile"] for gi in sim.show(path)["gpus"][0]["gpu_instances"]] == ["3g.40gb", "3g.40gb"]
    again, status = run_applier(tmp_path, record, path)
    assert again.returncode == 0 and "in place" in status["reason"]


@pytest.mark.parametrize("record, code, fragment", [
    (None, 2, "no such file"),
    ({"config_name": "missing", "document": CONFIG}, 2, "missing"),
    ({"config_name": "all-3g", "document": {"version": "v9"}}, 2, "cannot be used"),
])
def test_the_applier_refuses_a_bad_record_with_its_reason(tmp_path, record, code, fragment):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "A100-80GB", 1, node_name="n")
    done, status = run_applier(tmp_path, record, path)
    assert done.returncode == code
    assert status["result"] == "failed" and status["exit_code"] == code and fragment in status["reason"]
    assert fragment in done.stderr


def test_the_applier_fails_when_nvml_fails(tmp_path):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "A100-80GB", 1, node_name="n")
    sim.add_fault(path, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=0)
    done, status = run_applier(tmp_path, {"config_name": "all-3g", "document": CONFIG}, path)
    assert done.returncode == 1 and status["result"] == "failed"
    assert "GPU 0" in status["reason"]
