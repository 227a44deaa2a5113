#!/usr/bin/env bash
# Builds, once, a minimal Debian root that the molecule scenarios use as their target host
# (through the community.general.chroot connection), and caches it under the given directory.
# A root is reused while its stamp (suite + package list) matches; delete the directory to rebuild.
#
# Usage: base_root.sh CACHE_DIR    (prints the path of the root)
set -euo pipefail

cache_dir=${1:?usage: base_root.sh CACHE_DIR}
suite=${GPUOPS_MOLECULE_SUITE:-bookworm}
mirror=${GPUOPS_MOLECULE_MIRROR:-http://deb.debian.org/debian}
# python3/python3-apt: Ansible's modules and the apt module; systemd: `systemctl enable` works
# offline in a chroot; kmod/initramfs-tools: the driver role's nouveau blacklist and initramfs
# handler; containerd: the real binary that validates the toolkit role's containerd config.
packages=python3,python3-apt,systemd,kmod,initramfs-tools,containerd

root="$cache_dir/root"
stamp="$cache_dir/stamp"
want="$suite $packages"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$root/usr/bin/python3" ]]; then
    echo "$root"
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "base_root.sh: debootstrap and chroot need root" >&2
    exit 1
fi

rm -rf "$root" "$root.partial" "$stamp"
mkdir -p "$cache_dir"
debootstrap --variant=minbase --include="$packages" "$suite" "$root.partial" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 || {
    tail -n 30 "$cache_dir/debootstrap.log" >&2
    exit 1
}
# The target sees only the repositories the roles under test add (the local stand-in
# repositories): a converge never reaches Debian's mirror, so the tests run offline.
: >"$root.partial/etc/apt/sources.list"
rm -f "$root.partial"/etc/apt/sources.list.d/*
chroot "$root.partial" apt-get clean
rm -rf "$root.partial"/var/lib/apt/lists/*
mv "$root.partial" "$root"
echo "$want" >"$stamp"
echo "$root"
