"""Entry point: ``python -m gpuops_sim nvml … | cluster … | demo``."""

from __future__ import annotations

import sys

from gpuops_sim.cli import main

sys.exit(main())
