# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connection to a simulated GPU node: runs on the controller, as the local connection does.

A connection plugin of the simulator, not of the collection. A simulated node lives on the
controller, so its commands run there; but it is a node of its own, with its own reboot command
(``python -m gpuops_sim node reboot``), not the controller. ansible.builtin.reboot refuses the
``local`` transport, since it would reboot the controller; this transport is not ``local``, so the
collection reboots a simulated node exactly as it reboots a real one, through
ansible.builtin.reboot with the ``reboot_command`` and ``boot_time_command`` the simulator's
inventory sets for its nodes.

A node whose inventory names an ``ansible_user`` other than root is logged into as that user: each
command runs with ``GPUOPS_SIM_USER`` set to it, which the simulated NVML, systemctl, reboot and
driver installer read to refuse root-only work, and with the node's ``sudo``
(gpuops_sim/node/bin/sudo) first on its PATH, which Ansible's sudo become plugin calls to run a
task as root. Without ``ansible_user`` (or with root) commands run as root, as before.

Found through ``connection_plugins`` in the repository's ansible.cfg; outside the clone, set
``ANSIBLE_CONNECTION_PLUGINS=<clone>/gpuops_sim/ansible_plugins/connection``.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: gpuops_sim_node
    short_description: run a simulated GPU node's commands on the controller
    description:
        - Runs commands and modules on the controller, as the local connection does, for a node of the gpuops simulator.
        - Its transport is not C(local), so ansible.builtin.reboot reboots the node with the reboot command the
          inventory gives it, instead of refusing.
    author: gpuops maintainers
    extends_documentation_fragment:
        - connection_pipelining
    options:
      become_success_timeout:
        description:
          - Seconds to wait for become to succeed (as the local connection's option of ansible-core 2.19).
        type: int
        default: 10
        vars:
          - name: ansible_local_become_success_timeout
      become_strip_preamble:
        description:
          - Strip the become output preceding the command (as the local connection's option of ansible-core 2.19).
        type: bool
        default: true
        vars:
          - name: ansible_local_become_strip_preamble
      remote_user:
        description:
          - The user commands run as on the node. Root-only work on the node needs privilege escalation
            (C(become)) when it is not root.
        type: str
        vars:
          - name: ansible_user
"""

import os
import shlex

from ansible.plugins.connection.local import Connection as LocalConnection

SUDO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "node", "bin")


class Connection(LocalConnection):
    """The local connection under a transport name of its own, as the node's login user."""

    transport = "gpuops_sim_node"

    def get_option(self, option, hostvars=None):
        value = super().get_option(option, hostvars)
        if option == "remote_user" and not value:
            # Without ansible_user, the controller's user, as with the local connection (become is
            # then skipped where that user is the one to become).
            return self.default_user
        return value

    def exec_command(self, cmd, in_data=None, sudoable=True):
        user = super().get_option("remote_user")
        if user and user != "root" and isinstance(cmd, str):
            # A login shell of that user: the node's sudo first on its PATH.
            cmd = "export GPUOPS_SIM_USER=%s PATH=%s:\"$PATH\"; %s" % (shlex.quote(user), shlex.quote(SUDO_DIR), cmd)
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
