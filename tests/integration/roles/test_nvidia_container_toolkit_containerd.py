# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The toolkit role on a containerd configuration another tool wrote: it reports the runtimes and registry
mirrors it found, adds the NVIDIA runtime beside them, keeps every one of them, and changes nothing the
second time."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from roles_helpers import REPO, run_playbook

STANDIN_CTK = REPO / "tests" / "molecule" / "lib" / "standin" / "nvidia-ctk"

KUBESPRAY_CONFIG = """version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example.com"]
"""


def standin_bin(tmp_path: Path) -> Path:
    """nvidia-ctk 1.17.8 (no drop-in files) on PATH."""
    directory = tmp_path / "bin"
    directory.mkdir()
    target = directory / "nvidia-ctk"
    target.write_text("#!" + sys.executable + "\n" + STANDIN_CTK.read_text(encoding="utf-8").replace("@VERSION@", "1.17.8"),
                      encoding="utf-8")
    target.chmod(0o755)
    return directory


def play(config: Path) -> list[dict]:
    return [{"name": "Configure containerd", "hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Configure containerd",
        "ansible.builtin.include_role": {"name": "gpuops.nvidia.nvidia_container_toolkit", "tasks_from": "configure-containerd.yml"},
        "vars": {"nvidia_container_toolkit_containerd_config": str(config), "nvidia_container_toolkit_containerd_validate": False,
                 "nvidia_container_toolkit_restart_runtime": False}}]}]


def test_entries_another_tool_wrote_survive_and_are_reported(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(KUBESPRAY_CONFIG, encoding="utf-8")
    env = {"PATH": os.pathsep.join([str(standin_bin(tmp_path)), str(Path(sys.executable).parent), os.environ["PATH"]])}
    run = run_playbook(tmp_path, play(config), extra_env=env)
    assert run.returncode == 0, run.output[-4000:]
    assert "holds runtimes runc, kata (default runc) and registry mirrors docker.io" in run.output
    cri = tomllib.loads(config.read_text(encoding="utf-8"))["plugins"]["io.containerd.grpc.v1.cri"]
    runtimes = cri["containerd"]["runtimes"]
    assert set(runtimes) == {"runc", "kata", "nvidia"}
    assert runtimes["kata"] == {"runtime_type": "io.containerd.kata.v2"}
    assert runtimes["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert cri["registry"]["mirrors"]["docker.io"]["endpoint"] == ["https://mirror.example.com"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.9"
    again = run_playbook(tmp_path, play(config), extra_env=env, name="again")
    assert again.returncode == 0 and "changed=0" in again.output, again.output[-3000:]
