# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution-environment metadata works as ansible-builder uses it, offline.

ansible-builder reads ``meta/execution-environment.yml`` of every collection it installs into an
image (``introspect``, paths relative to the collection root). A user's own EE definition lists
the collection. Both steps run here without a container engine: ``create`` writes the build
context, and ``introspect`` is the step the image build runs on the installed collections.
"""

from __future__ import annotations

import shutil

import yaml
from ansible_builder.ee_schema import validate_schema

from packaging_helpers import BIN, ROOT, Installed, run  # pylint: disable=import-error

USER_DEFINITION = """\
---
version: 3
images:
  base_image:
    name: quay.io/fedora/fedora-minimal:40
dependencies:
  python_interpreter:
    package_system: python3.11
    python_path: /usr/bin/python3.11
  ansible_core:
    package_pip: ansible-core>=2.18,<2.20
  ansible_runner:
    package_pip: ansible-runner>=2.4,<3
  galaxy:
    collections:
      - name: /build/{tarball}
        type: file
additional_build_files:
  - src: {tarball}
    dest: collections
additional_build_steps:
  prepend_galaxy:
    - COPY _build/collections/{tarball} /build/
"""


def test_metadata_is_a_valid_v3_definition() -> None:
    definition = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    validate_schema(definition)
    assert definition["version"] == 3
    for key in ("python", "system", "galaxy"):
        assert (ROOT / definition["dependencies"][key]).is_file(), key


def test_requirements_yml_matches_galaxy_dependencies() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    requirements = yaml.safe_load((ROOT / "requirements.yml").read_text())
    declared = {entry["name"]: entry.get("version", "*") for entry in requirements["collections"]}
    assert declared == galaxy["dependencies"]


def test_bindep_file_parses() -> None:
    run([str(BIN / "bindep"), "--file", str(ROOT / "meta" / "ee-bindep.txt"), "--list_all", "newline"], ROOT, {})


def test_introspect_finds_the_collection_dependencies(installed_collection: Installed) -> None:
    proc = run([str(BIN / "ansible-builder"), "introspect", str(installed_collection.collections_path)],
               installed_collection.workdir, installed_collection.env)
    found = yaml.safe_load(proc.stdout)
    python = " ".join(found["python"])
    for package in ("kubernetes", "nvidia-ml-py", "jmespath"):
        assert f"{package}" in python and "from collection gpuops.nvidia" in python, package
    assert not any(line.startswith("ansible-core") for line in found["python"])
    assert any("openssh-client" in line and "gpuops.nvidia" in line for line in found["system"])


def test_user_definition_with_the_collection_creates_a_build_context(installed_collection: Installed) -> None:
    workdir = installed_collection.workdir / "ee-user"
    workdir.mkdir()
    shutil.copy(installed_collection.tarball, workdir)
    (workdir / "execution-environment.yml").write_text(USER_DEFINITION.format(tarball=installed_collection.tarball.name))
    run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "context",
         "--output-filename", "Containerfile"], workdir, installed_collection.env)
    context = workdir / "context"
    containerfile = (context / "Containerfile").read_text()
    assert "introspect" in containerfile and "ansible-galaxy collection install" in containerfile
    assert (context / "_build" / "collections" / installed_collection.tarball.name).is_file()
    assert "type: file" in (context / "_build" / "requirements.yml").read_text()


def test_metadata_builds_a_context_from_the_collection_root(installed_collection: Installed) -> None:
    # The metadata's paths are relative to the collection root, so as a definition of its own it
    # is used from there (a top-level copy); it then builds an image with the collection's deps.
    root = installed_collection.workdir / "ee-root"
    shutil.copytree(installed_collection.collection_root, root)
    shutil.copy(root / "meta" / "execution-environment.yml", root / "execution-environment.yml")
    run([str(BIN / "ansible-builder"), "create", "-c", "context", "--output-filename", "Containerfile"], root,
        installed_collection.env)
    build = root / "context" / "_build"
    assert "kubernetes.core" in (build / "requirements.yml").read_text()
    assert "nvidia-ml-py" in (build / "requirements.txt").read_text()
    assert "openssh-clients" in (build / "bindep.txt").read_text()
