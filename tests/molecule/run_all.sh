#!/usr/bin/env bash
# Runs `molecule test` for every scenario under molecule/ (each directory with a molecule.yml),
# one after the other, and fails if any scenario fails. `make molecule` calls it.
#
# The scenarios' targets are Debian roots reached through the community.general.chroot connection
# (see docs/roles/nvidia_driver.md, "Testing"), so this needs root, debootstrap, dpkg-deb and gpg;
# as root it installs the missing host tools with apt-get. The base root is built once (about a
# minute) and cached under .tmp/molecule/base.
#
# Usage: tests/molecule/run_all.sh [SCENARIO...]     (default: every scenario)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

export PATH="$repo/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$repo/ansible.cfg"
# gpuops.nvidia resolves from the clone (.collections links back to the repository); the
# collections bundled with the ansible package (community.general for the chroot connection)
# resolve from the virtual environment's site-packages.
export ANSIBLE_COLLECTIONS_PATH="$repo/.collections"
export GPUOPS_MOLECULE_WORKDIR="$repo/.tmp/molecule"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0

if [[ $EUID -ne 0 ]]; then
    echo "run_all.sh: the molecule scenarios use chroot targets and must run as root" >&2
    exit 1
fi

missing=()
for tool in debootstrap:debootstrap dpkg-deb:dpkg gpg:gpg gpgconf:gpgconf; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    echo "run_all.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if (($#)); then
    scenarios=("$@")
else
    scenarios=()
    for file in molecule/*/molecule.yml; do
        [[ -e "$file" ]] && scenarios+=("$(basename "$(dirname "$file")")")
    done
fi
if ((${#scenarios[@]} == 0)); then
    echo "run_all.sh: no scenario under molecule/" >&2
    exit 1
fi

echo "=== unit tests of the molecule helpers"
python -m pytest -q -p no:cacheprovider tests/molecule

failed=()
for scenario in "${scenarios[@]}"; do
    echo "=== molecule test -s $scenario"
    start=$SECONDS
    if molecule test -s "$scenario"; then
        echo "=== $scenario: passed in $((SECONDS - start)) s"
    else
        echo "=== $scenario: FAILED after $((SECONDS - start)) s"
        failed+=("$scenario")
    fi
done

if ((${#failed[@]})); then
    echo "run_all.sh: failed scenarios: ${failed[*]}" >&2
    exit 1
fi
echo "run_all.sh: all ${#scenarios[@]} scenarios passed"
