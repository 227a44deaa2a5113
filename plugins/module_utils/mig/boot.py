# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""The boot-time applier's files on the node: its record, its status file, and the digests of
what is installed.

The ``mig`` role writes the record (``/etc/gpuops/mig/config.json``); the applier writes its status
(``/var/lib/gpuops/mig/boot-status.json``) on every boot, success or failure; ``mig_config`` reads
both, and hashes the installed files, in the module run that plans, so a play learns all of it at
no extra module run per node.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The status the applier leaves, by exit code (see files/gpuops-mig-apply).
STATUS_APPLIED = "applied"
STATUS_FAILED = "failed"


def read_json_object(path: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """The JSON object in ``path`` and None, or ({}, why not) — an absent file is ({}, None)."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            value = json.load(handle)
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return {}, None
        return {}, "cannot read %s: %s" % (path, exc)
    except ValueError as exc:
        return {}, "%s is not JSON: %s" % (path, exc)
    if not isinstance(value, dict):
        return {}, "%s does not hold a JSON object" % path
    return value, None


def file_digests(paths: Sequence[str]) -> List[Optional[str]]:
    """The SHA-256 (hex) of each file, None for one that cannot be read."""
    digests: List[Optional[str]] = []
    for path in paths:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    digest.update(chunk)
        except (IOError, OSError):
            digests.append(None)
            continue
        digests.append(digest.hexdigest())
    return digests


def status_record(result: str, exit_code: int, reason: str, config_name: Optional[str], boot_id: Optional[str],
                  when: str) -> Dict[str, Any]:
    """What the applier leaves for the next play to read."""
    return {"result": result, "exit_code": exit_code, "reason": reason, "config_name": config_name,
            "boot_id": boot_id, "time": when}


def write_json_atomic(path: str, value: Dict[str, Any], indent: int = 1) -> None:
    """Write ``value`` to ``path`` through a temporary file in the same directory and a rename
    (mode 0644): a reader, or a boot cut short, finds the old content or the new, never a part."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(value, stream, indent=indent, sort_keys=True)
            stream.write("\n")
        os.chmod(temporary, 0o644)
        os.rename(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# Where ``systemctl enable`` puts a unit's links: one per target of its [Install] section.
ENABLING_DIRECTORY_SUFFIXES = (".wants", ".requires")


def unit_enabled(unit_path: str) -> bool:
    """Whether the unit installed at ``unit_path`` is enabled, as ``systemctl is-enabled`` decides it
    from the disk: a link named for the unit in a ``*.wants/`` or ``*.requires/`` directory next to
    it (``/etc/systemd/system/multi-user.target.wants/...``)."""
    directory, name = os.path.split(unit_path)
    try:
        entries = os.listdir(directory or ".")
    except (IOError, OSError):
        return False
    return any(os.path.lexists(os.path.join(directory, entry, name))
               for entry in entries if entry.endswith(ENABLING_DIRECTORY_SUFFIXES))
