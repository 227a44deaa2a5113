# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of gpuops.nvidia.mig_config: supply the config document the module applies.

The module runs on the GPU node, where the collection's files are not. So, on the controller:
- with neither ``config`` nor ``config_file``: read the collection's ``files/mig-configs/default.yaml``;
- with ``config_file`` and ``remote_src: false`` (the default): find and read that file here;
and pass the parsed document to the module as ``config``. With ``remote_src: true`` the module reads
``config_file`` on the node itself.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.action import ActionBase

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import (
    SpecError, excerpt, load_config_text, read_config_file,
)

try:
    import yaml
    HAS_YAML = True
    # libyaml's loader reads the shipped configs several times faster; each host's task reads them.
    SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    HAS_YAML = False

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG_FILE = os.path.join(COLLECTION_ROOT, "files", "mig-configs", "default.yaml")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def _read_document(self, path):
        """The document of ``path``, within the bounds of module_utils/mig/spec.py: a regular file of
        limited size, UTF-8, its aliases, nesting and integers bounded. The node gets the document
        parsed here, so an alias bomb never reaches it expanded; no message quotes the file."""
        if not HAS_YAML:
            raise AnsibleActionFail("PyYAML is required on the controller to read %s" % path)
        if path == DEFAULT_CONFIG_FILE:
            # The collection's own file, checked by its tests: the fast path every host's task takes.
            with open(path, "r") as handle:
                return yaml.load(handle.read(), Loader=SAFE_LOADER)  # nosec B506 - a safe loader
        try:
            return load_config_text(read_config_file(path), "config_file %s" % excerpt(path))
        except SpecError as exc:
            raise AnsibleActionFail(to_native(exc))

    @staticmethod
    def _only_selected(document, name):
        """The shipped document cut to the selected config, when it has it.

        The shipped configs are checked by the collection's tests, so the node need not parse all of
        them on every run. A name the document lacks still gets the whole document, so the module's
        refusal lists the names there are.
        """
        configs = document.get("mig-configs") if isinstance(document, dict) else None
        if not name or not isinstance(configs, dict) or name not in configs:
            return document
        return dict(document, **{"mig-configs": {name: configs[name]}})

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        source = None
        remote_src = args.get("remote_src", False)
        if not isinstance(remote_src, bool):
            from ansible.module_utils.parsing.convert_bool import boolean
            try:
                remote_src = boolean(remote_src, strict=True)
            except TypeError as exc:
                raise AnsibleActionFail("remote_src: %s" % to_native(exc))
        if args.get("config") is not None and args.get("config_file"):
            raise AnsibleActionFail("parameters are mutually exclusive: config|config_file")
        if args.get("config") is None and not args.get("config_file"):
            source = DEFAULT_CONFIG_FILE
            if not os.path.isfile(source):
                raise AnsibleActionFail("the collection's default MIG configs are missing: %s" % source)
        elif args.get("config_file") and not remote_src:
            try:
                source = self._find_needle("files", to_text(args["config_file"]))
            except AnsibleError:
                raise AnsibleActionFail("config_file: %s not found (searched the files/ directories of the role and "
                                        "playbook, then the path as given)" % excerpt(args["config_file"]))
        if source is not None:
            args["config"] = self._read_document(source)
            args.pop("config_file", None)
            if source == DEFAULT_CONFIG_FILE:
                args["config"] = self._only_selected(args["config"], args.get("config_name"))
        result.update(self._execute_module(module_name="gpuops.nvidia.mig_config", module_args=args, task_vars=task_vars))
        if source is not None:
            result["config_source"] = source
        return result
