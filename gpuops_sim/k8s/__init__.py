"""The simulated Kubernetes cluster: an API emulator and node agents.

``Emulator`` (server.py) serves the Kubernetes REST API on 127.0.0.1 over ``store.Store``, the
in-process object store the agents use; ``faults`` injects errors; ``discovery`` lists resources.
"""

from __future__ import annotations

from gpuops_sim.k8s.faults import Fault
from gpuops_sim.k8s.server import Emulator
from gpuops_sim.k8s.store import ApiError, NotFound, Store

__all__ = ["ApiError", "Emulator", "Fault", "NotFound", "Store"]
