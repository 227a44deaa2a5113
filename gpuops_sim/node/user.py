"""Who runs a command on a simulated node: root, or the unprivileged user Ansible logs in as.

A real node refuses root-only work (NVML changes, systemctl start/stop, a reboot, a driver install)
to anyone but root. On a simulated node every command runs as the controller's user, so the user a
command runs as is carried in ``GPUOPS_SIM_USER``: the simulator's connection plugin sets it to the
inventory's ``ansible_user``, and the node's ``sudo`` (gpuops_sim/node/bin/sudo, what Ansible's sudo
become plugin calls there) sets it to the user it becomes. Unset: root, as on a node where Ansible
logs in as root (the simulator's default cluster).
"""

from __future__ import annotations

import os

ENV = "GPUOPS_SIM_USER"
ROOT = "root"


def effective_user() -> str:
    return os.environ.get(ENV) or ROOT


def is_root() -> bool:
    return effective_user() == ROOT


def require_root(action: str) -> None:
    """Refuse ``action`` unless the command runs as root, as the real command would."""
    if not is_root():
        raise PermissionError(f"{action}: permission denied (running as {effective_user()}, not root; use sudo)")
