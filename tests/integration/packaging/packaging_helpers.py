# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the packaging tests: the collection as users get it, built with
``ansible-galaxy collection build``, installed from the tarball into a fresh path, and used from
there with nothing of the clone in sight (no ``.collections`` link, no repository ``ansible.cfg``,
a fresh ``HOME``).

The build and the install happen once per test process (conftest.py); every test reads them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
NAMESPACE, NAME = "gpuops", "nvidia"


def clean_env(home: Path, collections_path: Path) -> Dict[str, str]:
    """The environment of a user shell: no ANSIBLE_* from the Makefile, a HOME of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "K8S_AUTH_", "GPUOPS_"))}
    env.update({
        "HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_LOCAL_TEMP": str(home / ".ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    })
    return env


def run(args: List[str], cwd: Path, env: Dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass(frozen=True)
class Installed:
    """A built tarball and the collection installed from it."""

    tarball: Path
    collections_path: Path   # holds ansible_collections/gpuops/nvidia
    workdir: Path            # an empty directory outside the repository to run commands from
    env: Dict[str, str]

    @property
    def collection_root(self) -> Path:
        return self.collections_path / "ansible_collections" / NAMESPACE / NAME
