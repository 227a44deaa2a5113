# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the collection once and install it from the tarball into a fresh path (per test process)."""

from __future__ import annotations

import pytest

from packaging_helpers import BIN, NAME, NAMESPACE, ROOT, Installed, clean_env, run  # pylint: disable=import-error


@pytest.fixture(scope="session")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("galaxy")
    home, workdir, dist, collections_path = base / "home", base / "work", base / "dist", base / "collections"
    for path in (home, workdir, dist):
        path.mkdir()
    env = clean_env(home, collections_path)
    run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT), "--output-path", str(dist)], workdir, env)
    (tarball,) = dist.glob(f"{NAMESPACE}-{NAME}-*.tar.gz")
    # --offline: no Galaxy here. The dependency kubernetes.core is satisfied by the copy the
    # `ansible` package bundles, so the install needs neither --no-deps nor network.
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", str(tarball), "-p", str(collections_path)],
        workdir, env)
    return Installed(tarball=tarball, collections_path=collections_path, workdir=workdir, env=env)
