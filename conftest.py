# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.gpuops.nvidia`` importable in tests from a plain clone.

``.collections/ansible_collections/gpuops/nvidia`` links to the repository root (see ansible.cfg),
so putting ``.collections`` on sys.path resolves the collection the way Ansible does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parent / ".collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# Hypothesis profiles for the generated (hostile-input) tests. `ci` keeps `make test` short;
# `release` is run before a release (GPUOPS_HYPOTHESIS_PROFILE=release): ten times the cases,
# more than 2,000 for mig_config's config input alone.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis comes with requirements-dev.txt
    settings = None
if settings is not None:
    _COMMON = {"deadline": None, "derandomize": False, "print_blob": True,
               "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                         HealthCheck.data_too_large, HealthCheck.filter_too_much]}
    settings.register_profile("ci", max_examples=100, **_COMMON)
    settings.register_profile("release", max_examples=1000, **_COMMON)
    settings.register_profile("dev", max_examples=20, **_COMMON)
    settings.load_profile(os.environ.get("GPUOPS_HYPOTHESIS_PROFILE", "ci"))
