"""Unit tests of the molecule helpers (stand-in nvidia-ctk, stand-in repository builder) and of
the host roles' defaults against their argument specs. run_all.sh runs them before the scenarios:
.venv/bin/pytest tests/molecule
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def load(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def load_ctk(version: str) -> ModuleType:
    """The stand-in nvidia-ctk as standin_repo.py ships it: with its version filled in."""
    module = ModuleType(f"standin_nvidia_ctk_{version.replace('.', '_')}")
    source = (HERE / "lib" / "standin" / "nvidia-ctk").read_text(encoding="utf-8").replace("@VERSION@", version)
    exec(compile(source, "nvidia-ctk", "exec"), module.__dict__)  # noqa: S102 - our own test fixture
    return module


ctk = load_ctk("1.17.8")
repo = load("standin_repo", HERE / "lib" / "standin_repo.py")

DEBIAN_CONFIG = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
"""


def test_toml_dump_round_trips() -> None:
    document = tomllib.loads(DEBIAN_CONFIG)
    assert tomllib.loads(ctk.dump_toml(document)) == document


def test_add_runtime_copies_the_default_runtime_and_sets_it_default() -> None:
    config = ctk.add_containerd_runtime(tomllib.loads(DEBIAN_CONFIG), "nvidia", "/usr/bin/nvidia-container-runtime", True, False)
    containerd = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert containerd["default_runtime_name"] == "nvidia"
    assert containerd["runtimes"]["nvidia"]["options"] == {"SystemdCgroup": True, "BinaryName": "/usr/bin/nvidia-container-runtime"}
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == "registry.k8s.io/pause:3.9"


def test_add_runtime_output_is_a_fixed_point() -> None:
    once = ctk.dump_toml(ctk.add_containerd_runtime(tomllib.loads(DEBIAN_CONFIG), "nvidia", "/x", True, True))
    twice = ctk.dump_toml(ctk.add_containerd_runtime(tomllib.loads(once), "nvidia", "/x", True, True))
    assert once == twice


@pytest.mark.parametrize(
    ("existing", "plugin"),
    [({}, "io.containerd.grpc.v1.cri"), ({"version": 3}, "io.containerd.cri.v1.runtime"), ({"plugins": {}}, "cri")],
)
def test_add_runtime_uses_the_plugin_of_the_config_version(existing: dict, plugin: str) -> None:
    config = ctk.add_containerd_runtime(existing, "nvidia", "/x", False, False)
    assert config["plugins"][plugin]["containerd"]["runtimes"]["nvidia"]["options"]["BinaryName"] == "/x"


def test_drop_in_flag_exists_from_1_18() -> None:
    assert not ctk.HAS_DROP_IN
    assert load_ctk("1.18.0").HAS_DROP_IN


def test_packages_stanza_carries_the_hashes() -> None:
    deb = b"payload"
    stanza = repo.packages_stanza("Package: p\nVersion: 1\n", "./p.deb", deb)
    assert f"SHA256: {hashlib.sha256(deb).hexdigest()}" in stanza
    assert "Size: 7" in stanza and "Filename: ./p.deb" in stanza


def test_driver_packages_conflict_with_each_other() -> None:
    names = {p.name: p for p in repo.driver_packages("550.54.15", "6.1.0-1-amd64")}
    assert set(names) == {"cuda-drivers-550", "nvidia-open-550"}
    assert all(p.version == "550.54.15-1" and p.conflicts == p.provides for p in names.values())


def test_cuda_distro_names() -> None:
    assert repo.cuda_distro({"ID": "debian", "VERSION_ID": "12"}) == "debian12"
    assert repo.cuda_distro({"ID": "ubuntu", "VERSION_ID": "22.04"}) == "ubuntu2204"


@pytest.mark.parametrize("role", ["nvidia_driver", "nvidia_container_toolkit"])
def test_role_defaults_match_the_argument_spec(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    assert {name: spec.get("default") for name, spec in options.items()} == defaults
