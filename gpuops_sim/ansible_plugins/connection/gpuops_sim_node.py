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
"""

from ansible.plugins.connection.local import Connection as LocalConnection


class Connection(LocalConnection):
    """The local connection under a transport name of its own."""

    transport = "gpuops_sim_node"
