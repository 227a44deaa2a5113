# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input through the real mig_config module, on the NVML simulator.

Generated configs run in-process (see conftest.py); the cases that once exhausted memory or hung
run in a child process under resource limits (address space, CPU seconds), whose peak memory is
measured. Across all of them: no traceback, nothing changed on a refused input, ``changed``
truthful, and no case over 200 MB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from hypothesis import given, settings, strategies as st


ROOT = Path(__file__).resolve().parents[3]
# The mutating NVML calls (as the harness of conftest.py counts them).
MUTATING = (
    "nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy",
)
A100 = "NVIDIA A100-SXM4-40GB"
SECRET = "s3cr3t-line-of-the-file"
MEMORY_LIMIT_MB = 200
CPU_LIMIT_S = 10
# A fraction of the profile's cases: each goes through the whole module.
MODULE_CASES = max(10, settings.default.max_examples // 4)

CHILD = r"""
import json, resource, sys
limit_as, limit_cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
resource.setrlimit(resource.RLIMIT_CPU, (limit_cpu, limit_cpu))
sys.path.insert(0, sys.argv[3])
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.gpuops.nvidia.plugins.modules import mig_config

class Exit(Exception):
    pass

result = {}
def finish(_self, msg=None, **kwargs):
    if msg is not None:
        kwargs.update(failed=True, msg=msg)
    result.update(kwargs)
    raise Exit()
basic.AnsibleModule.exit_json = finish
basic.AnsibleModule.fail_json = finish
basic.AnsibleModule.warn = lambda _self, text: None
with patch_module_args(json.loads(sys.stdin.read())):
    try:
        mig_config.main()
    except Exit:
        pass
# The peak of this process's own memory since it started (VmHWM): getrusage's ru_maxrss also counts
# what the forking test worker held when it started the child.
with open("/proc/self/status", encoding="ascii") as status:
    result["maxrss_kb"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps(result, default=str))
"""


def run_child(node, args: Dict[str, Any], timeout: float = 60) -> Dict[str, Any]:
    """mig_config's main() in a child process under an address-space and CPU limit."""
    env = dict(os.environ, GPUOPS_NVML_SIMULATOR=str(node.path))
    done = subprocess.run([sys.executable, "-c", CHILD, str(1024 ** 3), str(CPU_LIMIT_S), str(ROOT / ".collections")],
                          input=json.dumps(args), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["maxrss_kb"] < MEMORY_LIMIT_MB * 1024, result["maxrss_kb"]
    return result


def assert_refused_and_nothing_changed(node, result, before, *fragments):
    assert result.get("failed"), result
    assert not result.get("changed") and not result.get("changed_gpus")
    message = result["msg"]
    assert len(message) < 1000 and SECRET not in message and "root:x" not in message, message[:500]
    for fragment in fragments:
        assert fragment in message, message
    assert node.show()["gpus"] == before


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += ["a%d: &a%d [%s]" % (i, i, ",".join("*a%d" % (i - 1) for _i in range(9))) for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def hostile_files(tmp_path: Path) -> Dict[str, Any]:
    files: Dict[str, Any] = {}
    (tmp_path / "nul.yaml").write_bytes(b"version: v1\x00\nmig-configs: {}\n")
    files["nul"] = (tmp_path / "nul.yaml", "NUL byte")
    (tmp_path / "latin1.yaml").write_bytes("version: v1\n# caf\u00e9\n".encode("latin-1"))
    files["non-utf8"] = (tmp_path / "latin1.yaml", "not UTF-8 text")
    (tmp_path / "deep.yaml").write_text("[" * 5000 + "]" * 5000)
    files["deep"] = (tmp_path / "deep.yaml", "nest")
    (tmp_path / "bigint.yaml").write_text("version: v1\nmig-configs:\n  c:\n    - devices: [%s]\n      mig-enabled: false\n" % ("9" * 5000))
    files["bigint"] = (tmp_path / "bigint.yaml", "an integer of 5000 digits")
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    files["alias-bomb"] = (tmp_path / "bomb.yaml", "aliases are expanded")
    (tmp_path / "big.yaml").write_text("version: v1\n" + "# padding\n" * 400000)
    files["4MB"] = (tmp_path / "big.yaml", "more than the 1048576")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    files["fifo"] = (fifo, "a FIFO")
    files["dev-zero"] = (Path("/dev/zero"), "a device")
    files["directory"] = (tmp_path, "a directory")
    (tmp_path / "passwd").write_text("root:x:0:0:%s:/root:/bin/bash\nbin:x:1:1::/bin:/usr/sbin/nologin\n" % SECRET)
    files["passwd"] = (tmp_path / "passwd", "got a str")
    (tmp_path / "sub").mkdir()
    files["dotdot"] = (tmp_path / "sub" / ".." / "passwd", "got a str")
    return files


CASES = ["nul", "non-utf8", "deep", "bigint", "alias-bomb", "4MB", "fifo", "dev-zero", "directory", "passwd", "dotdot"]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_config_file_on_the_node_is_refused_clearly_and_cheaply(node, tmp_path, case):
    node.init(A100, count=1, mig_enabled=True)
    before = node.show()["gpus"]
    path, fragment = hostile_files(tmp_path)[case]
    result = run_child(node, {"config_file": str(path), "remote_src": True, "config_name": "c"})
    assert_refused_and_nothing_changed(node, result, before, "config_file", fragment)


@pytest.mark.parametrize("case", ["passwd", "alias-bomb", "deep", "bigint"])
def test_hostile_yaml_text_as_config_is_refused_clearly_and_cheaply(node, tmp_path, case):
    node.init(A100, count=1, mig_enabled=True)
    before = node.show()["gpus"]
    path, fragment = hostile_files(tmp_path)[case]
    result = run_child(node, {"config": path.read_text(), "config_name": "c"})
    assert_refused_and_nothing_changed(node, result, before, fragment)


def test_the_action_plugin_refuses_an_alias_bomb_on_the_controller(node, tmp_path):
    """The controller once spent 50 s and 1 GB expanding it, then sent it to the node."""
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    args = {"config_file": str(tmp_path / "bomb.yaml"), "config_name": "c"}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", GPUOPS_NVML_SIMULATOR=str(node.path),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote"))
    node.init(A100, count=1, mig_enabled=True)
    done = subprocess.run(
        ["prlimit", "--as=%d" % (2 * 1024 ** 3), "--cpu=%d" % (3 * CPU_LIMIT_S), "--",
         str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "gpuops.nvidia.mig_config", "-a", json.dumps(args),
         "-e", "ansible_python_interpreter=" + sys.executable],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "aliases are expanded" in done.stdout and "lol" not in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    # The largest process of the ansible run (its controller measured about 60 MB). A child's ru_maxrss
    # starts from what this test worker held when it forked it, so that is allowed on top.
    worker_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < worker_kb + MEMORY_LIMIT_MB * 1024


# --- generated configs through the module ----------------------------------------------------------

PROFILES = st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.10gb", "1g.5gb+me", "1c.3g.20gb",
                            "1g.5gb\n", "7g.80gb", ""])
COUNTS = st.one_of(st.integers(0, 8), st.integers(), st.just(2 ** 31))
ENTRY = st.fixed_dictionaries(
    {"devices": st.one_of(st.just("all"), st.lists(st.integers(-1, 2), max_size=2), st.just(0)),
     "mig-enabled": st.one_of(st.booleans(), st.just("yes"))},
    optional={"mig-devices": st.dictionaries(PROFILES, COUNTS, max_size=3)})
DOCUMENT = st.fixed_dictionaries({"version": st.sampled_from(["v1", "v1", "v2"]),
                                  "mig-configs": st.dictionaries(st.sampled_from(["c", "d"]), st.lists(ENTRY, min_size=1, max_size=3),
                                                                 min_size=1, max_size=2)})


def assert_truthful(node, result, before):
    after = node.show()["gpus"]
    if result.get("failed") and not result.get("failed_gpu"):
        # Refused before the apply: nothing changed, not one mutating NVML call.
        assert after == before and not result.get("changed"), result.get("msg")
        assert not [call for call in node.calls if call in MUTATING]
    assert bool(result.get("changed")) == (after != before), result.get("msg")
    assert "Traceback" not in str(result.get("msg", ""))


@settings(max_examples=MODULE_CASES)
@given(DOCUMENT, st.booleans(), st.booleans())
def test_generated_configs_through_the_module(node, document, as_text, check):
    node.init(A100, count=2, mig_enabled=True)
    before = node.show()["gpus"]
    del node.calls[:]
    config = yaml.safe_dump(document) if as_text else document
    result = node.run("mig_config", {"config": config, "config_name": "c", "reset_command": node.reset_command}, check=check)
    assert len(str(result.get("msg", ""))) < 3000
    if check:
        assert node.show()["gpus"] == before and not [call for call in node.calls if call in MUTATING]
    else:
        assert_truthful(node, result, before)
