# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""What every Kubernetes module of the collection does the same way: its argument spec
starts from the auth options, it gets its client from one place, it fails one way."""

from __future__ import annotations

import copy
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    K8sError,
    KubeClient,
    create_client,
    kubeconfig_secrets,
)


def argument_spec(**options: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(options)
    return spec


def run(module: AnsibleModule, action: Callable[[KubeClient], dict[str, Any]]) -> None:
    """Build the client, run ``action`` with it and exit with its result (or its failure)."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    for secret in kubeconfig_secrets(module.params.get("kubeconfig")):
        module.no_log_values.add(secret)
    try:
        client = create_client(module.params)
        result = action(client)
    except K8sError as error:
        details = dict(error.details)
        if details.get("missing_library"):
            module.fail_json(msg=missing_required_lib(details["missing_library"]) + " " + error.msg)
        details.pop("status", None)
        if not module._diff:
            details.pop("diff", None)
        module.fail_json(msg=error.msg, **details)
    if not module._diff:
        result.pop("diff", None)
    warnings = result.pop("warnings", None) or []
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)
