"""Helpers shared by the NVML simulator tests (a uniquely named module: conftest.py is not importable)."""

from __future__ import annotations

from pathlib import Path

import pynvml

from gpuops_sim import nvml as sim


def install(path: Path) -> None:
    """What plugins/module_utils/nvml.py does (contract §1), then nvmlInit."""
    with pynvml.libLoadLock:
        pynvml.nvmlLib = sim.load_library(path)
        pynvml._nvmlGetFunctionPointer_cache.clear()  # pylint: disable=protected-access
    pynvml.nvmlInit()


def uninstall() -> None:
    with pynvml.libLoadLock:
        pynvml.nvmlLib = None
        pynvml._nvmlGetFunctionPointer_cache.clear()  # pylint: disable=protected-access
        pynvml._nvmlLib_refcount = 0  # pylint: disable=protected-access
