"""The simulated Kubernetes cluster: an API emulator (``Emulator``, ``store.Store``) and node agents.

``Emulator`` lives in ``server.py``; ``store.Store`` is the in-process object store the agents use.
"""

from __future__ import annotations

from gpuops_sim.k8s.store import ApiError, NotFound, Store

__all__ = ["ApiError", "NotFound", "Store"]
