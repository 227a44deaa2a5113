"""Ansible plugins of the simulator (not of the collection): see connection/gpuops_sim_node.py.

Also where the Ansible settings for a strategy come from, for the tests and the benchmarks that run
the collection's playbooks under either strategy (``GPUOPS_ANSIBLE_STRATEGY``, docs/scale.md)."""

from __future__ import annotations

import os
from typing import Dict, Optional

#: The strategies the tests and the benchmarks run the playbooks under.
STRATEGIES = ("linear", "mitogen_linear")


def mitogen_strategy_plugins() -> str:
    """Where Mitogen for Ansible (PyPI ``mitogen``) keeps its strategy plugins; ImportError when it
    is not installed."""
    import ansible_mitogen  # pylint: disable=import-outside-toplevel

    return os.path.join(os.path.dirname(os.path.abspath(ansible_mitogen.__file__)), "plugins", "strategy")


def strategy_env(strategy: Optional[str]) -> Dict[str, str]:
    """The environment variables that make ansible-playbook run under ``strategy``: nothing for the
    default (``linear`` or None), ANSIBLE_STRATEGY and ANSIBLE_STRATEGY_PLUGINS for a Mitogen one."""
    if not strategy or strategy == "linear":
        return {}
    if not strategy.startswith("mitogen"):
        return {"ANSIBLE_STRATEGY": strategy}
    return {"ANSIBLE_STRATEGY": strategy, "ANSIBLE_STRATEGY_PLUGINS": mitogen_strategy_plugins()}
