"""Run ``ansible-test sanity`` on the working tree, offline.

ansible-test needs the collection under ``…/ansible_collections/gpuops/nvidia`` and bootstraps a
pip into each sanity virtualenv by downloading ``get-pip.py``, which this network cannot reach.
So this script copies the files git knows about (tracked, plus untracked but not ignored) into
``.tmp/sanity/ansible_collections/gpuops/nvidia`` and installs a stand-in bootstrap script that
uses ``ensurepip`` and the configured package index instead of the download.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".tmp" / "sanity"
COLLECTION = WORK / "ansible_collections" / "gpuops" / "nvidia"

GET_PIP_STANDIN = '''\
"""Stand-in for get-pip.py: bootstrap pip with ensurepip, then install what was asked."""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null; the system pip.conf holds the index and CA bundle.
env = {k: v for k, v in os.environ.items() if k != "PIP_CONFIG_FILE"}
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args, env=env)
'''


def pip_version_for_ansible_test() -> str:
    import ansible_test._internal.python_requirements as reqs  # type: ignore[import-not-found]

    source = Path(reqs.__file__).read_text()
    match = re.search(r"pip='([0-9.]+)'", source)
    if not match:
        raise SystemExit("cannot find the pip version ansible-test bootstraps")
    return match.group(1)


def install_get_pip_standin() -> None:
    version = pip_version_for_ansible_test()
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"get_pip_{version.replace('.', '_')}.py").write_text(GET_PIP_STANDIN)


def copy_tree() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    if COLLECTION.exists():
        shutil.rmtree(COLLECTION)
    COLLECTION.mkdir(parents=True)
    for name in filter(None, listed):
        if name.startswith(".collections/"):
            continue
        source = ROOT / name
        if not source.exists() or source.is_dir():
            continue
        target = COLLECTION / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    # ansible-test lists files through git when the collection is a git repository.
    subprocess.run(["git", "init", "-q"], cwd=COLLECTION, check=True)
    subprocess.run(["git", "add", "-A"], cwd=COLLECTION, check=True)


def main() -> int:
    install_get_pip_standin()
    copy_tree()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    command = [str(Path(sys.executable).parent / "ansible-test"), "sanity", "--local", "--python", python, *sys.argv[1:]]
    env = dict(os.environ)
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(command, cwd=COLLECTION, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
