"""Fixtures: a node-state file with the simulated library installed under the real pynvml."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from gpuops_sim import nvml as sim
from nvml_sim_support import install, uninstall


@pytest.fixture
def simulated_node(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``simulated_node(model, count=1, **init_node kwargs)`` → state path, with pynvml on it."""
    counter = iter(range(1000))

    def make(model: str, count: int = 1, **kwargs: object) -> Path:
        path = tmp_path / f"node-{next(counter)}.json"
        sim.init_node(path, model, count, **kwargs)  # type: ignore[arg-type]
        install(path)
        return path

    yield make
    uninstall()
