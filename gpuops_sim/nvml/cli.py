"""``python -m gpuops_sim nvml …``: create, inspect and disturb a simulated node's GPUs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from gpuops_sim.node import user
from gpuops_sim.nvml import mig, state
from gpuops_sim.nvml.models import MODELS

ENV = "GPUOPS_NVML_SIMULATOR"


def _state_arg(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(ENV)
    parser.add_argument("--state", default=default, required=default is None,
                        help=f"node-state file (default: ${ENV})")


def register(subparsers: argparse._SubParsersAction) -> None:  # pylint: disable=protected-access
    parser = subparsers.add_parser("nvml", help="simulated NVIDIA GPUs of one node (NVML)")
    sub = parser.add_subparsers(dest="nvml_command", required=True)

    init = sub.add_parser("init", help="create (or overwrite) a node-state file")
    _state_arg(init)
    init.add_argument("--model", required=True, help="GPU model name or alias, see `nvml models`")
    init.add_argument("--count", type=int, default=8, help="number of GPUs (default 8)")
    init.add_argument("--mig-enabled", action="store_true", help="start with MIG mode enabled")
    init.add_argument("--node", default=state.DEFAULT_NODE, help="node name; also seeds the UUIDs")
    init.add_argument("--reset-policy", choices=mig.RESET_POLICIES, default="reset",
                      help="reset: GPUs can be reset (bare metal); reboot: only a reboot applies pending MIG mode (VM)")
    init.add_argument("--driver-version", default=state.DEFAULT_DRIVER_VERSION)
    init.add_argument("--no-driver", action="store_true",
                      help="a node without a driver: NVML cannot be loaded until `nvml driver --install` and a reboot")
    init.add_argument("--cuda-version", type=int, default=state.DEFAULT_CUDA_VERSION, help="e.g. 12040 for 12.4")
    init.set_defaults(func=_init)

    models = sub.add_parser("models", help="list the simulated GPU models")
    models.add_argument("--json", action="store_true", help="print JSON with the profile tables")
    models.set_defaults(func=_models)

    show = sub.add_parser("show", help="print the node's GPUs as JSON")
    _state_arg(show)
    show.set_defaults(func=_show)

    fault = sub.add_parser("fault", help="inject a fault or change the node's behaviour")
    _state_arg(fault)
    what = fault.add_mutually_exclusive_group(required=True)
    what.add_argument("--fail", metavar="FUNCTION", help="NVML symbol whose next calls fail, e.g. nvmlDeviceCreateGpuInstance")
    what.add_argument("--process", metavar="UUID", help="start a process on this GPU or MIG device")
    what.add_argument("--detach", metavar="PID", type=int, help="end the process with this pid")
    what.add_argument("--client", metavar="GPU", help="a client (see --name) holds this GPU open")
    what.add_argument("--remove-client", metavar="GPU", help="the client (--name, default all) lets go of this GPU")
    what.add_argument("--reset-policy", choices=mig.RESET_POLICIES)
    what.add_argument("--disable-with-instances", choices=mig.DISABLE_WITH_INSTANCES,
                      help="what SetMigMode(disable) does while GPU instances exist")
    what.add_argument("--profile-queries-need-mig", choices=("on", "off"),
                      help="on: profile info/placements answer NOT_SUPPORTED while MIG is disabled (older drivers)")
    what.add_argument("--clear", action="store_true", help="remove injected faults, clients and fault processes")
    what.add_argument("--service", metavar="NAME", help="a host service that holds every GPU while active (see --active)")
    what.add_argument("--kernel-module", metavar="NAME", help="load (see --loaded) a kernel module such as nvidia_drm")
    fault.add_argument("--error", help="NVML error for --fail: a code or a name such as IN_USE")
    fault.add_argument("--count", type=int, default=1, help="how many calls fail (default 1; 0 = until cleared)")
    fault.add_argument("--gpu", type=int, help="with --fail: only calls about this GPU index")
    fault.add_argument("--pid", type=int, help="with --process: the pid (default: a free one)")
    fault.add_argument("--memory", type=int, default=1024, help="with --process: used memory in MiB")
    fault.add_argument("--active", choices=("yes", "no"), default="yes", help="with --service: running or stopped")
    fault.add_argument("--loaded", choices=("yes", "no"), default="yes", help="with --kernel-module: loaded or not")
    fault.add_argument("--name", default=None, help="with --client: e.g. nvidia-persistenced (default), dcgm")
    fault.set_defaults(func=_fault)

    reset = sub.add_parser("reset", help="reset GPUs like `nvidia-smi -r -i …`")
    _state_arg(reset)
    reset.add_argument("--gpu", action="append", required=True, help="index, UUID or bus id (repeatable)")
    reset.set_defaults(func=_reset)

    driver = sub.add_parser("driver", help="install a driver package: NVML reports it after the next reboot")
    _state_arg(driver)
    driver.add_argument("--install", required=True, metavar="VERSION", help="the driver version, e.g. 570.86.15")
    driver.set_defaults(func=_driver)

    faults = sub.add_parser("driver-fault", help="faults of the node's driver and boot (an empty value clears one)")
    _state_arg(faults)
    faults.add_argument("--install-error", help="the driver install fails with this message")
    faults.add_argument("--loads", metavar="VERSION", help="the next reboot loads this driver instead of the installed one")
    faults.add_argument("--kubelet-down", choices=("true", "false"), help="the kubelet does not start at boot")
    faults.set_defaults(func=_driver_fault)

    reboot = sub.add_parser("reboot", help="reboot the node")
    _state_arg(reboot)
    reboot.set_defaults(func=_reboot)


def _init(args: argparse.Namespace) -> int:
    node = state.init_node(args.state, args.model, args.count, mig_enabled=args.mig_enabled, node_name=args.node,
                           reset_policy=args.reset_policy, driver_version=None if args.no_driver else args.driver_version,
                           cuda_version=args.cuda_version)
    print(f"{args.state}: node {node['node']} with {args.count} x {node['gpus'][0]['model']}")
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([{
            "name": m.name,
            "aliases": list(m.aliases),
            "pci_device_id": f"0x{m.pci_device_id:08X}",
            "memory_total_mib": m.memory_total_mib,
            "mig_capable": m.mig_capable,
            "gpu_instance_profiles": [{
                "name": p.name, "id": p.id, "enum": p.enum, "instances": p.instance_count, "slices": p.slice_count,
                "memory_mib": p.memory_mib, "multiprocessors": p.multiprocessors,
                "placements": [{"start": s, "size": p.placement_size} for s in p.placement_starts],
                "compute_instance_profiles": [{"name": c.name, "id": c.id, "instances": c.instance_count}
                                              for c in m.ci_profiles(p)],
            } for p in m.gi_profiles],
        } for m in MODELS], indent=2))
        return 0
    for model in MODELS:
        mig_text = ", ".join(p.name for p in model.gi_profiles) if model.mig_capable else "no MIG"
        print(f"0x{model.pci_device_id:08X}  {model.name:<24} {mig_text}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(state.show(args.state), indent=2))
    return 0


def _fault(args: argparse.Namespace) -> int:
    path = args.state
    if args.fail:
        if not args.error:
            raise ValueError("--fail needs --error (a code or a name such as IN_USE)")
        state.add_fault(path, args.fail, args.error, count=args.count, gpu=args.gpu)
    elif args.process:
        pid = args.pid if args.pid is not None else state.next_fault_pid(state.read_state(path))
        state.attach_process(path, args.process, pid, args.memory, source="fault")
        print(pid)
    elif args.detach is not None:
        state.detach_process(path, args.detach)
    elif args.client is not None:
        state.add_client(path, args.client, args.name or "nvidia-persistenced")
    elif args.service is not None:
        state.set_service(path, args.service, args.active == "yes")
    elif args.kernel_module is not None:
        state.set_kernel_module(path, args.kernel_module, args.loaded == "yes")
    elif args.remove_client is not None:
        state.remove_client(path, args.remove_client, args.name)
    elif args.reset_policy:
        state.set_setting(path, "reset_policy", args.reset_policy)
    elif args.disable_with_instances:
        state.set_setting(path, "mig_disable_with_instances", args.disable_with_instances)
    elif args.profile_queries_need_mig:
        state.set_setting(path, "profile_queries_need_mig", args.profile_queries_need_mig == "on")
    else:
        state.clear_faults(path)
    return 0


def _reset(args: argparse.Namespace) -> int:
    idents = [part for value in args.gpu for part in value.split(",") if part]
    try:
        lines = state.reset_gpus(args.state, idents)
    except state.ResetError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print("\n".join(lines))
    return 0


def _driver(args: argparse.Namespace) -> int:
    try:
        user.require_root("installing the NVIDIA driver")
    except PermissionError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        loaded = state.install_driver(args.state, args.install)
    except state.DriverInstallError as exc:
        print(f"{args.state}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.state}: driver {args.install} installed; {loaded or 'no driver'} stays loaded until the next reboot")
    return 0


def _driver_fault(args: argparse.Namespace) -> int:
    changes = {name: value for name, value in (("install_error", args.install_error), ("loads", args.loads)) if value is not None}
    if args.kubelet_down is not None:
        changes["kubelet_down"] = args.kubelet_down == "true"
    print(json.dumps(state.set_driver_faults(args.state, **changes)))
    return 0


def _reboot(args: argparse.Namespace) -> int:
    state.reboot(args.state)
    print(f"{args.state}: rebooted")
    return 0
