"""A simulated node's systemd and reboot (gpuops_sim/node): unit files parsed and ordered as
systemd orders them, enabled through their [Install] section, run as written at boot; the kubelet
starts only when the units it requires succeeded."""

from __future__ import annotations

import json
import os
import sys

import pytest

from gpuops_sim import nvml
from gpuops_sim.k8s import Emulator, workload as manifests
from gpuops_sim.node import boot, systemd

NODE = "gpu-node-1"


def unit(root, name, text):
    path = os.path.join(root, systemd.UNIT_DIR, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def step(log, label, code=0):
    """An ExecStart line that appends its label and $ORDER_ENV to ``log`` and exits with ``code``."""
    script = f"import os,sys; open({str(log)!r},'a').write({label!r}+':'+os.environ.get('ORDER_ENV','')+'\\n'); sys.exit({code})"
    return f'{sys.executable} -c "{script}"'


@pytest.fixture
def node(tmp_path):
    emulator = Emulator().start()
    kubeconfig = emulator.write_kubeconfig(str(tmp_path / "kubeconfig"))
    emulator.store.create("nodes", None, manifests.node_manifest(NODE, "sim"))
    emulator.store.create("pods", "default", {"apiVersion": "v1", "kind": "Pod",
                                              "metadata": {"name": "job", "namespace": "default"},
                                              "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]}})
    path = str(tmp_path / f"{NODE}.json")
    nvml.init_node(path, "A100-40GB", 1, node_name=NODE)
    root = str(tmp_path / "root")
    systemd.set_host(path, root, kubeconfig=kubeconfig, node=NODE)
    yield path, root, emulator, tmp_path / "order.log"
    emulator.stop()


def ready(emulator):
    conditions = emulator.store.get("nodes", None, NODE)["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Ready")


def test_unit_files_parse_with_repeated_keys_and_comments():
    parsed = systemd.parse_unit("# c\n[Unit]\nAfter=a.service\nAfter=b.service\n; c\n[Service]\nExecStart=/bin/x \\\n  --y\n")
    assert parsed == {"Unit": {"After": ["a.service", "b.service"]}, "Service": {"ExecStart": ["/bin/x    --y"]}}


def test_enabled_units_run_in_unit_order_then_the_kubelet(node):
    path, root, emulator, log = node
    unit(root, "b.service", f"[Unit]\nAfter=a.service\n[Service]\nExecStart={step(log, 'b')}\n"
                            "[Install]\nRequiredBy=kubelet.service\n")
    unit(root, "a.service", f"[Unit]\nBefore=b.service\n[Service]\nEnvironment=ORDER_ENV=from-unit\n"
                            f"ExecStart={step(log, 'a')}\n[Install]\nWantedBy=multi-user.target\n")
    unit(root, "c.service", f"[Service]\nExecStart={step(log, 'c')}\n")  # installed, never enabled
    for name in ("a.service", "b.service"):
        systemd.enable(root, name)
    assert systemd.is_enabled(root, "a.service") and not systemd.is_enabled(root, "c.service")
    assert systemd.enabled_units(root) == ["a.service", "b.service"]
    before = open(os.path.join(root, systemd.BOOT_ID), encoding="utf-8").read()

    result = boot.reboot(path)

    assert log.read_text() == "a:from-unit\nb:\n"
    assert result["started"] == ["a.service", "b.service"] and result["failed"] == [] and result["kubelet"]
    assert result["killed"] == ["default/job"]
    assert emulator.store.list("pods", "default") == []
    kills = [r for r in emulator.requests if r["method"] == "DELETE"]
    assert kills and all(r["user_agent"].startswith("kubelet/") for r in kills)
    assert ready(emulator)["status"] == "True"
    assert open(os.path.join(root, systemd.BOOT_ID), encoding="utf-8").read() != before
    assert nvml.read_state(path)["boot_count"] == 1


def test_a_failed_required_unit_holds_the_kubelet_back(node):
    path, root, emulator, log = node
    unit(root, "apply.service", f"[Service]\nExecStart={step(log, 'apply', 4)}\n[Install]\nRequiredBy=kubelet.service\n")
    systemd.enable(root, "apply.service")

    result = boot.reboot(path)

    assert result["failed"] == ["apply.service"] and not result["kubelet"]
    assert log.read_text() == "apply:\n"  # run once at boot
    condition = ready(emulator)
    assert condition["status"] == "False" and "apply.service failed" in condition["message"]
    text, code = systemd.status_text(path, "apply.service")
    assert code == 3 and "Active: failed" in text and "status=4/FAILURE" in text
    # The unit is retried with the kubelet, as `systemctl start kubelet` retries its dependencies.
    with pytest.raises(systemd.UnitError, match="dependency"):
        systemd.start(path, "kubelet.service", lambda *_args: None)


def test_a_unit_whose_condition_fails_is_skipped_and_does_not_block(node):
    path, root, emulator, log = node
    unit(root, "opt.service", f"[Unit]\nConditionPathExists={root}/etc/absent\n[Service]\nExecStart={step(log, 'x', 1)}\n"
                              "[Install]\nRequiredBy=kubelet.service\n")
    systemd.enable(root, "opt.service")
    result = boot.reboot(path)
    assert result["kubelet"] and not log.exists()
    assert systemd.unit_state(path, "opt.service")["result"] == "condition"
    assert ready(emulator)["status"] == "True"
    assert json.loads(json.dumps(nvml.read_state(path)["host"]))["kubelet"] == "active"


def test_driver_faults_fail_the_install_load_another_driver_or_keep_the_kubelet_down(node):
    path, _root, emulator, _log = node
    loaded = nvml.read_state(path)["driver_version"]
    nvml.state.set_driver_faults(path, install_error="DKMS build failed")
    with pytest.raises(nvml.state.DriverInstallError, match="DKMS build failed"):
        nvml.state.install_driver(path, "570.86.15")
    assert "installed_driver_version" not in nvml.read_state(path)
    # The next reboot loads another driver than the one installed, and the kubelet stays down.
    nvml.state.set_driver_faults(path, install_error=None, loads="565.57.01", kubelet_down=True)
    nvml.state.install_driver(path, "570.86.15")
    result = boot.reboot(path)
    assert nvml.read_state(path)["driver_version"] == "565.57.01" != loaded
    assert result["kubelet"] is False and ready(emulator)["status"] != "True"
    # Cleared, a reboot brings the kubelet back (the driver stays what the kernel loaded).
    assert nvml.state.set_driver_faults(path, loads=None, kubelet_down=None) == {}
    assert boot.reboot(path)["kubelet"] is True and ready(emulator)["status"] == "True"
    with pytest.raises(ValueError, match="unknown driver faults"):
        nvml.state.set_driver_faults(path, kernel_panic=True)
