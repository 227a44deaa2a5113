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

Under a Mitogen strategy (``mitogen_linear``, ``mitogen_free``; see docs/scale.md) the connection
becomes Mitogen's local connection, as ``local`` itself does under those strategies, so a
simulated node is driven the way Mitogen drives a real node over ssh: one Python interpreter per
node, kept for the whole run, running its modules. Each node gets an interpreter of its own (named
for the node), never one shared with another node or with the controller, so a module's
environment, its imports and its working state stay the node's, as on a real fleet; that costs the
controller one interpreter per simulated node (on a real fleet it runs on the node). Mitogen's
own local connection would put every host with the same Python into one interpreter. The
unprivileged login of a fresh node (``ansible_user``) is modelled under Ansible's own strategies
only: under Mitogen a node's commands run as the controller's user.

With ``GPUOPS_SIM_NODE_CPU_LOG`` naming a file in the environment of ansible-playbook, each command
run on a node under Ansible's own strategies appends the CPU seconds it used (the command and all it
waited for: the module's Python) to that file, one number per line. The benchmarks use it to split
the controller's CPU into Ansible's own and the simulated nodes' work, which on a real fleet runs on
the nodes.

Commands start in the controller user's home directory, as an ssh login starts in the login user's;
pipelining (``ANSIBLE_PIPELINING``, on in the repository's ansible.cfg) works as on a real node.

Found through ``connection_plugins`` in the repository's ansible.cfg; outside the clone, set
``ANSIBLE_CONNECTION_PLUGINS=<clone>/gpuops_sim/ansible_plugins/connection``.
"""

from __future__ import annotations

import sys

DOCUMENTATION = """
    name: gpuops_sim_node
    short_description: run a simulated GPU node's commands on the controller
    description:
        - Runs commands and modules on the controller, as the local connection does, for a node of the gpuops simulator.
        - Its transport is not C(local), so ansible.builtin.reboot reboots the node with the reboot command the
          inventory gives it, instead of refusing.
        - Under a Mitogen strategy it runs each node's tasks in a Mitogen interpreter of the node's own.
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
import resource
import shlex

from ansible.plugins.connection.local import Connection as LocalConnection

TRANSPORT = "gpuops_sim_node"
NODE_CPU_LOG = "GPUOPS_SIM_NODE_CPU_LOG"
SUDO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "node", "bin")


def mitogen_strategy_active() -> bool:
    """Whether a Mitogen strategy runs this play: it installs its plugin-loader wrappers for the
    run (and removes them after), in the controller and in the workers it forks."""
    strategy = sys.modules.get("ansible_mitogen.strategy")
    if strategy is None:
        return False
    import ansible_mitogen.loaders  # pylint: disable=import-outside-toplevel

    return ansible_mitogen.loaders.connection_loader.get_with_context is strategy.wrap_connection_loader__get_with_context


_MITOGEN_CONNECTION = None


def mitogen_connection_class() -> type:
    """Mitogen's local connection under this transport's name, one interpreter per node."""
    global _MITOGEN_CONNECTION  # pylint: disable=global-statement
    if _MITOGEN_CONNECTION is not None:
        return _MITOGEN_CONNECTION
    # pylint: disable=import-outside-toplevel
    import getpass

    import ansible_mitogen.transport_config
    from ansible_mitogen.plugins.connection.mitogen_local import Connection as MitogenLocalConnection

    class NodeSpec(ansible_mitogen.transport_config.PlayContextSpec):
        """The node's login is the controller's user, as for Ansible's local connection: become to
        that same user is no step at all (Ansible skips it too), so no sudo runs on a host without one."""

        def remote_user(self):
            return super().remote_user() or getpass.getuser()

    # Named Connection: Ansible finds a plugin's settings by its class name ("connection").
    class Connection(MitogenLocalConnection):  # pylint: disable=redefined-outer-name
        """Mitogen's local connection, but a node of its own: its transport stays this plugin's
        (ansible.builtin.reboot reboots it), and its interpreter is its own."""

        transport = TRANSPORT

        def _build_stack(self):
            inventory_name = self.get_task_var("inventory_hostname")
            spec = NodeSpec(
                connection=self, play_context=self._play_context, transport="local", inventory_name=inventory_name)
            stack = list(self._stack_from_spec(spec))
            # Mitogen keys an interpreter by its connection arguments: the node's name in them gives
            # every node its own (become hops, if any, are stacked on it).
            first = dict(stack[0])
            first["kwargs"] = dict(first["kwargs"], remote_name=f"gpuops-sim-node:{inventory_name}")
            stack[0] = first
            return inventory_name, tuple(stack)

    _MITOGEN_CONNECTION = Connection
    return _MITOGEN_CONNECTION


class Connection(LocalConnection):
    """The local connection under a transport name of its own, as the node's login user; Mitogen's
    local connection under a Mitogen strategy."""

    transport = TRANSPORT

    def __init__(self, *args, **kwargs):
        # Ansible's plugin loader makes the object and then calls __init__ on it, so the choice is
        # made here, per connection, from the strategy that runs the task.
        if mitogen_strategy_active():
            self.__class__ = mitogen_connection_class()
            self.__class__.__init__(self, *args, **kwargs)  # pylint: disable=non-parent-init-called
            return
        super().__init__(*args, **kwargs)
        # A login over ssh starts in the user's home directory, not in the directory ansible-playbook
        # runs from. It matters to a pipelined module: Python reading it from stdin drops its current
        # directory from the module's path, which would drop a node's PYTHONPATH that names it.
        self.cwd = os.path.expanduser("~")

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
        log = os.environ.get(NODE_CPU_LOG)
        if not log:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        # A worker runs one task: what its children used from here on is this command's.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        finally:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            # One short line in append mode: the workers of a run write to it side by side.
            with open(log, "a", encoding="ascii") as handle:
                handle.write("%.4f\n" % used)
