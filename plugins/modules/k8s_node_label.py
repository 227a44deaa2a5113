#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_label
short_description: Set or remove labels and annotations of a Kubernetes node
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Sets the named labels and annotations of a node to the given values, or removes those given as V(null).
    Keys not named are never changed.
  - The write is a JSON merge patch carrying the node's C(metadata.resourceVersion) as a precondition. If another writer
    changed the node in between, the API answers 409; the node is then read again and the change recomputed, until
    O(timeout).
options:
  name:
    description:
      - Name of the node.
    type: str
    required: true
  labels:
    description:
      - Labels to set, as a dictionary of key and value. A V(null) value removes the label.
      - Values are strings; YAML booleans become V(true) or V(false), numbers their decimal text.
    type: dict
    default: {}
  annotations:
    description:
      - Annotations to set, as a dictionary of key and value. A V(null) value removes the annotation.
    type: dict
    default: {}
  timeout:
    description:
      - Seconds to keep retrying conflicts (409) and transient API errors before failing.
    type: int
    default: 60
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes
seealso:
  - module: gpuops.nvidia.k8s_node_taint
  - module: gpuops.nvidia.k8s_node_wait
"""

EXAMPLES = r"""
---
- name: Pause the device plugin on a node for a MIG change
  gpuops.nvidia.k8s_node_label:
    name: gpu-node-1
    labels:
      nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change
      nvidia.com/mig.config.state: pending

- name: Record why the change failed, and drop a stale label
  gpuops.nvidia.k8s_node_label:
    name: gpu-node-1
    labels:
      nvidia.com/mig.config.state: failed
      example.com/obsolete: null
    annotations:
      gpuops.io/mig-reconfigure.message: "allocatable did not reach the expected counts"
"""

RETURN = r"""
labels:
  description: All labels of the node afterwards (predicted in check mode).
  returned: success
  type: dict
  sample: {"kubernetes.io/hostname": "gpu-node-1", "nvidia.com/mig.config.state": "pending"}
annotations:
  description: The named annotations afterwards; V(null) for an absent one.
  returned: success
  type: dict
  sample: {"gpuops.io/mig-reconfigure.message": "allocatable did not reach the expected counts"}
previous:
  description: The values of the named labels and annotations before the module ran; V(null) for absent ones.
  returned: success
  type: dict
  contains:
    labels:
      description: Previous label values.
      type: dict
      returned: success
    annotations:
      description: Previous annotation values.
      type: dict
      returned: success
  sample: {"labels": {"nvidia.com/mig.config.state": "success"}, "annotations": {"gpuops.io/mig-reconfigure.message": null}}
conflicts_retried:
  description: How many times the write met a concurrent change (409) and was recomputed.
  returned: success
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    change_node,
    label_patch,
    label_view,
    normalize_metadata_changes,
    previous_values,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            name={"type": "str", "required": True},
            labels={"type": "dict", "default": {}},
            annotations={"type": "dict", "default": {}},
            timeout={"type": "int", "default": 60},
        ),
        supports_check_mode=True,
    )
    params = module.params

    def action(client):
        labels = normalize_metadata_changes("labels", params["labels"], is_label=True)
        annotations = normalize_metadata_changes("annotations", params["annotations"], is_label=False)
        outcome = change_node(
            client,
            params["name"],
            lambda node: label_patch(node, labels, annotations),
            client.retry.deadline(params["timeout"]),
            module.check_mode,
        )
        before = previous_values(outcome.before, labels, annotations)
        after = previous_values(outcome.after, labels, annotations)
        view_before, view_after = label_view(outcome.before), label_view(outcome.after)
        return {
            "changed": before != after,
            "labels": view_after["labels"],
            "annotations": after["annotations"],
            "previous": before,
            "conflicts_retried": outcome.conflicts,
            "diff": {
                "before": {"labels": view_before["labels"], "annotations": before["annotations"]},
                "after": {"labels": view_after["labels"], "annotations": after["annotations"]},
            },
        }

    run(module, action)


if __name__ == "__main__":
    main()
