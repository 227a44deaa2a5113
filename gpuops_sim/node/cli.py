"""``python -m gpuops_sim node …``: reboot a simulated node, and read its boot id."""

from __future__ import annotations

import argparse
import os
import sys

from gpuops_sim.node import boot, systemd, user

ENV = "GPUOPS_NVML_SIMULATOR"


def _state_arg(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(ENV)
    parser.add_argument("--state", default=default, required=default is None,
                        help=f"the node's state file, DIR/nodes/<node>.json of a cluster (default: ${ENV})")


def register(subparsers: argparse._SubParsersAction) -> None:  # pylint: disable=protected-access
    parser = subparsers.add_parser("node", help="a simulated node's host: reboot it, read its boot id")
    sub = parser.add_subparsers(dest="node_command", required=True)
    reboot = sub.add_parser("reboot", help="reboot the node: its pods die, its boot units run, its kubelet returns")
    _state_arg(reboot)
    reboot.add_argument("--quiet", action="store_true", help="print nothing on success")
    reboot.set_defaults(func=_reboot)
    boot_id = sub.add_parser("boot-id", help="print the node's current boot id")
    _state_arg(boot_id)
    boot_id.set_defaults(func=_boot_id)
    parted = sub.add_parser("mig-parted-apply", help="what mig-parted's boot service does: apply a named config "
                                                     "(all-disabled, or all-<profile> filled with that profile)")
    _state_arg(parted)
    parted.add_argument("--config", required=True, help="the named config, e.g. all-1g.5gb")
    parted.set_defaults(func=_mig_parted_apply)


def _reboot(args: argparse.Namespace) -> int:
    if not user.is_root():
        # As systemd's reboot for a user without the right to it.
        print("Call to Reboot failed: Access denied", file=sys.stderr)
        return 1
    result = boot.reboot(args.state)
    if not args.quiet:
        print(f"{args.state}: rebooted (boot id {result['boot_id']}); {len(result['killed'])} pod(s) died; "
              f"units started: {', '.join(result['started']) or 'none'}; failed: {', '.join(result['failed']) or 'none'}; "
              f"kubelet {'up' if result['kubelet'] else 'held back'}")
    # The reboot itself succeeded also when a unit failed: the node is up (reachable), NotReady.
    return 0


def _mig_parted_apply(args: argparse.Namespace) -> int:
    from gpuops_sim.k8s.brownfield import apply_named_config  # pylint: disable=import-outside-toplevel
    try:
        apply_named_config(args.state, args.config)
    except ValueError as exc:
        print(f"mig-parted: {exc}", file=sys.stderr)
        return 1
    return 0


def _boot_id(args: argparse.Namespace) -> int:
    root = systemd.host(args.state).get("root")
    if not root:
        print(f"{args.state}: the node has no host settings (cluster up writes them)", file=sys.stderr)
        return 1
    with open(os.path.join(root, systemd.BOOT_ID), encoding="utf-8") as handle:
        print(handle.read().strip())
    return 0
