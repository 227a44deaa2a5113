# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every default of the Kubernetes-object roles is documented and validated by its argument spec."""

from __future__ import annotations

import pytest
import yaml

from roles_helpers import REPO

ROLES = ["nvidia_device_plugin", "gpu_operator", "dcgm_exporter", "existing_software"]
# Play-wide settings the roles read and validate but do not define.
SHARED = {"k8s_gpu_mig_strategy", "device_plugin_time_slicing_replicas", "device_plugin_time_slicing_rename_by_default",
          "k8s_kubeconfig", "k8s_context", "k8s_validate_certs"}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_the_argument_spec(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8"))
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options = spec["argument_specs"]["main"]["options"]
    assert set(options) - set(defaults) <= SHARED
    assert set(defaults) <= set(options)
    for name, value in defaults.items():
        assert name.startswith(role + "_"), name
        assert options[name].get("description"), name
        if isinstance(value, str) and "{{" in value:
            # A default that falls back to a play-wide setting is resolved at run time.
            assert "default" not in options[name], name
        else:
            assert options[name].get("default") == value, name
