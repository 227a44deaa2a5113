"""A stand-in for the parts of ``nvidia-smi`` that MIG tooling runs: ``-L``, ``-r/--gpu-reset``
and ``-mig``. It acts on the node-state file named by ``GPUOPS_NVML_SIMULATOR``.

Exit codes follow nvidia-smi: 0 success, 2 invalid argument, 3 not supported (reset refused in a
VM), 6 GPU not found, 9 no driver (no state file), 255 other (GPU in use).
"""

from __future__ import annotations

import argparse
import os
import sys

from gpuops_sim.nvml import errors, mig, state

ENV = "GPUOPS_NVML_SIMULATOR"
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvidia-smi", description="Simulated nvidia-smi (gpuops_sim).")
    parser.add_argument("-L", "--list-gpus", action="store_true", help="list GPUs and MIG devices")
    parser.add_argument("-r", "--gpu-reset", action="store_true", help="reset the GPUs given with -i")
    parser.add_argument("-i", "--id", help="comma-separated GPU indexes, UUIDs or PCI bus ids")
    parser.add_argument("-mig", "--multi-instance-gpu", choices=("0", "1"), help="disable (0) or enable (1) MIG mode")
    return parser


def _list(node: dict) -> list[str]:
    lines = []
    for gpu in node["gpus"]:
        model = mig.model_of(gpu)
        lines.append(f"GPU {gpu['index']}: {model.name} (UUID: {gpu['uuid']})")
        for number, (gi, ci) in enumerate(mig.mig_devices(gpu)):
            name = mig.ci_profile_of(model, gi, ci).name
            lines.append(f"  MIG {name:<13} Device {number:>2}: (UUID: {ci['uuid']})")
    return lines


def _ids(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _set_mig(path: str, idents: list[str] | None, mode: int) -> int:
    node = state.read_state(path)
    targets = [state.find_gpu(node, i)["index"] for i in idents] if idents else [g["index"] for g in node["gpus"]]
    word = "Enabled" if mode else "Disabled"
    for index in targets:
        bus = node["gpus"][index]["pci_bus_id"]
        try:
            status = state.set_mig_mode(path, index, mode)
        except errors.NvmlError as exc:
            print(f"Unable to {word.lower()[:-1]} MIG Mode for GPU {bus}: {errors.error_string(exc.code)}", file=sys.stderr)
            return 3 if exc.code == errors.NOT_SUPPORTED else 255
        print(f"{word} MIG Mode for GPU {bus}")
        if status != errors.SUCCESS:
            print(f"Warning: MIG mode is in pending {word.lower()[:-1]} state for GPU {bus}:"
                  f"{errors.error_string(status)}")
            print(f"Reset the GPU or reboot the system to make MIG mode {word.lower()} effective.")
    print("All done.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = os.environ.get(ENV)
    if not path or not os.path.exists(path):
        print(NO_DRIVER, file=sys.stderr)
        return 9
    try:
        if args.gpu_reset:
            try:
                lines = state.reset_gpus(path, _ids(args.id))  # type: ignore[arg-type]
            except state.ResetError as exc:
                print(str(exc), file=sys.stderr)
                return exc.exit_code
            print("\n".join(lines + ["All done."]))
            return 0
        if args.multi_instance_gpu is not None:
            return _set_mig(path, _ids(args.id), int(args.multi_instance_gpu))
        print("\n".join(_list(state.read_state(path))))
        return 0
    except LookupError as exc:
        print(f"No devices were found ({exc.args[0]})", file=sys.stderr)
        return 6
