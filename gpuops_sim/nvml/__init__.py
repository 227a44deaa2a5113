"""Simulated NVML: GPU models with real MIG tables, a node-state file, and a fake
``libnvidia-ml`` that the real pynvml drives (see docs/simulator-nvml.md).

``load_library`` is imported lazily so that the state API and the ``nvidia-smi`` stand-in work
without pynvml.
"""

from __future__ import annotations

from typing import Any

from gpuops_sim.nvml.state import (
    ResetError,
    add_client,
    add_fault,
    attach_process,
    clear_faults,
    detach_process,
    device_error,
    init_node,
    read_state,
    reboot,
    remove_client,
    reset_gpu,
    reset_gpus,
    set_kernel_module,
    set_mig_mode,
    set_service,
    set_setting,
    show,
)

__all__ = [
    "ResetError", "add_client", "add_fault", "attach_process", "clear_faults", "detach_process", "device_error", "init_node",
    "load_library", "read_state", "reboot", "remove_client", "reset_gpu", "reset_gpus", "set_kernel_module",
    "set_mig_mode", "set_service", "set_setting", "show",
]


def load_library(path: Any) -> Any:
    """Contract §1: the object to install as ``pynvml.nvmlLib`` for the node-state file ``path``."""
    from gpuops_sim.nvml.library import load_library as load  # pylint: disable=import-outside-toplevel

    return load(path)
