"""Builds the signed local apt repositories that stand in for NVIDIA's package repositories in
the molecule scenarios.

Packages that only NVIDIA's repositories serve (the data-center driver, the container toolkit)
are built here with ``dpkg-deb``, with NVIDIA's package names and the installed files the roles
rely on. They are published as flat repositories laid out like NVIDIA's (CUDA:
``cuda/<distro>/<arch>/``; libnvidia-container: ``libnvidia-container/stable/deb/<dpkg arch>/``),
signed with a throwaway key, so the roles' apt tasks run unchanged, GPG verification included.

Usage: python3 standin_repo.py TARGET_ROOT [--prefix /srv/gpuops-test-repo]
The repositories are written to TARGET_ROOT/PREFIX and read inside the target through file: URLs.
"""
from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDIN_DIR = HERE / "standin"
MAINTAINER = "gpuops test stand-ins <noreply@gpuops.invalid>"

DRIVER_VERSIONS = ("550.54.15", "550.90.07", "560.35.03")
TOOLKIT_VERSIONS = ("1.17.8", "1.18.0")


@dataclass(frozen=True)
class PackageFile:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    description: str
    files: tuple[PackageFile, ...] = ()
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    conffiles: tuple[str, ...] = ()
    architecture: str = "all"
    extra: dict[str, str] = field(default_factory=dict)


def control_text(package: Package) -> str:
    fields = {
        "Package": package.name,
        "Version": package.version,
        "Architecture": package.architecture,
        "Maintainer": MAINTAINER,
        "Section": "non-free/libs",
        "Priority": "optional",
    }
    if package.depends:
        fields["Depends"] = ", ".join(package.depends)
    if package.provides:
        fields["Provides"] = ", ".join(package.provides)
    if package.conflicts:
        fields["Conflicts"] = ", ".join(package.conflicts)
        fields["Replaces"] = ", ".join(package.conflicts)
    fields.update(package.extra)
    fields["Description"] = package.description + "\n Stand-in built by tests/molecule for offline role tests; it contains no NVIDIA software."
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def doc_file(package: Package | str, text: str) -> PackageFile:
    name = package if isinstance(package, str) else package.name
    return PackageFile(f"usr/share/doc/{name}/README.gpuops-standin", text + "\n")


def driver_packages(version: str, kernel: str) -> list[Package]:
    branch = version.split(".")[0]
    unit = (
        "[Unit]\nDescription=NVIDIA Persistence Daemon\nWants=syslog.target\n\n"
        "[Service]\nType=forking\n"
        "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose\n"
        "ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    smi = (
        "#!/bin/sh\n# stand-in: no kernel module can be loaded in the test root\n"
        "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\" >&2\nexit 9\n"
    )
    files = (
        PackageFile("usr/bin/nvidia-smi", smi, 0o755),
        PackageFile("usr/bin/nvidia-persistenced", "#!/bin/sh\nexit 0\n", 0o755),
        PackageFile("usr/lib/systemd/system/nvidia-persistenced.service", unit),
        PackageFile("usr/share/gpuops-standin/driver-version", version + "\n"),
    )
    packages = []
    # NVIDIA's CUDA repository names the branch packages cuda-drivers-<branch> (proprietary kernel
    # modules) and nvidia-open-<branch> (open kernel modules); only one can be installed.
    for name in (f"cuda-drivers-{branch}", f"nvidia-open-{branch}"):
        packages.append(
            Package(
                name=name,
                version=f"{version}-1",
                description=f"NVIDIA driver {version} (stand-in)",
                files=files + (doc_file(name, f"driver {version}"),),
                provides=("gpuops-standin-nvidia-driver",),
                conflicts=("gpuops-standin-nvidia-driver",),
            )
        )
    return packages


def kernel_headers_package(kernel: str) -> Package:
    name = f"linux-headers-{kernel}"
    return Package(
        name=name,
        version="1.0-gpuops1",
        description=f"Header files for the running kernel {kernel} (stand-in)",
        files=(PackageFile(f"usr/src/{name}/Makefile", "# stand-in\n"), doc_file(name, "kernel headers")),
    )


def toolkit_packages(version: str, multiarch: str) -> list[Package]:
    deb_version = f"{version}-1"
    # Kept without its #! line in the source tree (the repository's sanity test allows none there).
    nvidia_ctk = "#!/usr/bin/python3\n" + (STANDIN_DIR / "nvidia-ctk").read_text(encoding="utf-8").replace("@VERSION@", version)
    runtime_config = (
        "#accept-nvidia-visible-devices-as-volume-mounts = false\n"
        "disable-require = false\n\n"
        "[nvidia-container-cli]\nenvironment = []\nldconfig = \"@/sbin/ldconfig\"\nload-kmods = true\n\n"
        "[nvidia-container-runtime]\nlog-level = \"info\"\nmode = \"auto\"\nruntimes = [\"runc\", \"crun\"]\n"
    )
    return [
        Package(
            name="libnvidia-container1",
            version=deb_version,
            description="NVIDIA container runtime library (stand-in)",
            files=(PackageFile(f"usr/lib/{multiarch}/libnvidia-container.so.{version}", "stand-in\n"), doc_file("libnvidia-container1", version)),
        ),
        Package(
            name="libnvidia-container-tools",
            version=deb_version,
            description="NVIDIA container runtime library, command-line tools (stand-in)",
            files=(PackageFile("usr/bin/nvidia-container-cli", "#!/bin/sh\nexit 0\n", 0o755), doc_file("libnvidia-container-tools", version)),
            depends=(f"libnvidia-container1 (= {deb_version})",),
        ),
        Package(
            name="nvidia-container-toolkit-base",
            version=deb_version,
            description="NVIDIA Container Toolkit base (stand-in)",
            files=(
                PackageFile("usr/bin/nvidia-ctk", nvidia_ctk, 0o755),
                PackageFile("usr/bin/nvidia-container-runtime", "#!/bin/sh\nexec runc \"$@\"\n", 0o755),
                PackageFile("etc/nvidia-container-runtime/config.toml", runtime_config),
                doc_file("nvidia-container-toolkit-base", version),
            ),
            conffiles=("/etc/nvidia-container-runtime/config.toml",),
        ),
        Package(
            name="nvidia-container-toolkit",
            version=deb_version,
            description="NVIDIA Container Toolkit (stand-in)",
            files=(PackageFile("usr/bin/nvidia-container-runtime-hook", "#!/bin/sh\nexit 0\n", 0o755), doc_file("nvidia-container-toolkit", version)),
            depends=(f"nvidia-container-toolkit-base (= {deb_version})", f"libnvidia-container-tools (= {deb_version})"),
        ),
    ]


def packages_stanza(control: str, filename: str, deb: bytes) -> str:
    return (
        control.rstrip("\n")
        + f"\nFilename: {filename}\nSize: {len(deb)}\nMD5sum: {hashlib.md5(deb).hexdigest()}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n"
    )


def release_text(origin: str, indexes: dict[str, bytes], date: str) -> str:
    lines = [f"Origin: {origin}", f"Label: {origin}", f"Date: {date}", "Acquire-By-Hash: no"]
    for title, algorithm in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{title}:")
        lines.extend(f" {algorithm(data).hexdigest()} {len(data)} {name}" for name, data in indexes.items())
    return "\n".join(lines) + "\n"


def build_deb(package: Package, workdir: Path) -> bytes:
    tree = workdir / f"{package.name}_{package.version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(control_text(package), encoding="utf-8")
    if package.conffiles:
        (tree / "DEBIAN" / "conffiles").write_text("".join(f"{c}\n" for c in package.conffiles), encoding="utf-8")
    for item in package.files:
        target = tree / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content, encoding="utf-8")
        target.chmod(item.mode)
    out = workdir / f"{package.name}_{package.version}_{package.architecture}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)], check=True, stdout=subprocess.DEVNULL)
    return out.read_bytes()


def publish(repo_dir: Path, packages: list[Package], gnupghome: Path, workdir: Path) -> None:
    repo_dir.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for package in packages:
        deb = build_deb(package, workdir)
        filename = f"{package.name}_{package.version}_{package.architecture}.deb"
        (repo_dir / filename).write_bytes(deb)
        stanzas.append(packages_stanza(control_text(package), f"./{filename}", deb))
    index = "\n".join(stanzas).encode()
    (repo_dir / "Packages").write_bytes(index)
    (repo_dir / "Packages.gz").write_bytes(gzip.compress(index, mtime=0))
    release = release_text("gpuops-standin", {"Packages": index, "Packages.gz": gzip.compress(index, mtime=0)}, email.utils.formatdate(usegmt=True))
    (repo_dir / "Release").write_text(release, encoding="utf-8")
    gpg = ["gpg", "--batch", "--yes", "--homedir", str(gnupghome)]
    subprocess.run(gpg + ["--clearsign", "-o", str(repo_dir / "InRelease"), str(repo_dir / "Release")], check=True)
    subprocess.run(gpg + ["--armor", "--detach-sign", "-o", str(repo_dir / "Release.gpg"), str(repo_dir / "Release")], check=True)


def make_key(gnupghome: Path) -> str:
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = ["gpg", "--batch", "--homedir", str(gnupghome)]
    subprocess.run(
        gpg + ["--passphrase", "", "--quick-gen-key", "gpuops molecule stand-in repository <noreply@gpuops.invalid>", "ed25519", "sign", "never"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return subprocess.run(gpg + ["--armor", "--export"], check=True, capture_output=True, text=True).stdout


def os_release(root: Path) -> dict[str, str]:
    values = {}
    for line in (root / "etc/os-release").read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip('"')
    return values


def cuda_distro(release: dict[str, str]) -> str:
    """NVIDIA's CUDA repository directory for a distribution: debian12, ubuntu2204, ..."""
    return release["ID"] + release["VERSION_ID"].replace(".", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--prefix", default="/srv/gpuops-test-repo")
    args = parser.parse_args()

    root: Path = args.root.resolve()
    repo = root / args.prefix.lstrip("/")
    shutil.rmtree(repo, ignore_errors=True)
    kernel = os.uname().release
    machine = os.uname().machine
    cuda_arch = {"x86_64": "x86_64", "aarch64": "sbsa"}[machine]
    deb_arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True, text=True).stdout.strip()
    multiarch = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[deb_arch]

    with tempfile.TemporaryDirectory(prefix="gpuops-standin-") as tmp:
        tmpdir = Path(tmp)
        gnupghome = tmpdir / "gnupg"
        try:
            key = make_key(gnupghome)
            cuda_dir = repo / "cuda" / cuda_distro(os_release(root)) / cuda_arch
            driver = [p for v in DRIVER_VERSIONS for p in driver_packages(v, kernel)] + [kernel_headers_package(kernel)]
            publish(cuda_dir, driver, gnupghome, tmpdir)
            # The name of NVIDIA's CUDA repository signing key file for Debian and Ubuntu.
            (cuda_dir / "3bf863cc.pub").write_text(key, encoding="utf-8")

            toolkit_root = repo / "libnvidia-container"
            toolkit = [p for v in TOOLKIT_VERSIONS for p in toolkit_packages(v, multiarch)]
            publish(toolkit_root / "stable" / "deb" / deb_arch, toolkit, gnupghome, tmpdir)
            (toolkit_root / "gpgkey").write_text(key, encoding="utf-8")
        finally:
            subprocess.run(["gpgconf", "--homedir", str(gnupghome), "--kill", "gpg-agent"], check=False)
    print(repo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
