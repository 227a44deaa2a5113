"""What the simulated kubelet runs inside a pod's containers: the few programs it knows run to an end.

A real kubelet runs a pod of ``restartPolicy: Never`` until its containers exit; the simulator
has no processes, so it recognises the programs a test or a product gives such pods:

- ``sleep N`` (as the command, or ``sh -c "sleep N"``): exits 0 after N seconds, as a batch job's
  work that ends on its own;
- ``nvidia-smi`` (any arguments, e.g. ``-L``): opens each device the kubelet gave the pod through
  the node's simulated NVML and exits 0 when every one answers; otherwise it exits with the NVML
  return code (nvidia-smi's documented exit status: 15 for a GPU that is lost) and prints why.

Any other program runs until the pod is deleted (a training job, a server). Independently of the
program, ``activeDeadlineSeconds`` ends a pod that runs longer (phase Failed, reason
DeadlineExceeded), as a real kubelet does.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Any, Callable, Iterable, Mapping

SLEEP = "sleep"
NVIDIA_SMI = "nvidia-smi"


@dataclasses.dataclass(frozen=True)
class Program:
    """A recognised container program: what it is, and how long it runs before it exits."""

    kind: str
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a container ended: its exit code, the reason the kubelet reports, and its last output."""

    code: int
    reason: str
    message: str = ""


def _words(container: Mapping[str, Any]) -> list[str]:
    words = [str(word) for word in (container.get("command") or []) + (container.get("args") or [])]
    if len(words) >= 3 and words[0].rsplit("/", 1)[-1] in ("sh", "bash") and words[1] == "-c":
        try:
            return shlex.split(words[2])
        except ValueError:
            return words
    return words


def program_of(container: Mapping[str, Any]) -> Program | None:
    """The recognised program a container runs, None for any other (it runs until deleted)."""
    words = _words(container)
    if not words:
        return None
    name = words[0].rsplit("/", 1)[-1]
    if name == SLEEP and len(words) == 2:
        try:
            seconds = float(words[1].rstrip("s"))
        except ValueError:
            return None
        if not math.isfinite(seconds):  # `sleep infinity` runs until deleted
            return None
        return Program(SLEEP, max(0.0, seconds))
    if name == NVIDIA_SMI:
        return Program(NVIDIA_SMI)
    return None


def pod_program(pod: Mapping[str, Any]) -> Program | None:
    """What a pod of ``restartPolicy: Never`` runs to an end: its longest-running recognised
    container; None when the pod runs until deleted (another restart policy, whose failed
    containers a kubelet restarts, or a container whose program is not recognised)."""
    spec = pod.get("spec") or {}
    if spec.get("restartPolicy") != "Never":
        return None
    programs = [program_of(container) for container in spec.get("containers") or []]
    if not programs or any(program is None for program in programs):
        return None
    return max(programs, key=lambda program: program.seconds)  # type: ignore[arg-type, return-value]


def run_nvidia_smi(device_uuids: Iterable[str], device_error: Callable[[str], tuple[int, str] | None]) -> Exit:
    """nvidia-smi inside the container: each of its devices must open through NVML."""
    lines = []
    for uuid in device_uuids:
        error = device_error(uuid)
        if error is not None:
            code, text = error
            return Exit(code, "Error", "Unable to determine the device handle for {0}: {1}".format(uuid, text))
        lines.append("{0} (UUID: {1})".format("MIG" if uuid.startswith("MIG-") else "GPU", uuid))
    return Exit(0, "Completed", "\n".join(lines))


def terminated_status(pod: Mapping[str, Any], outcome: Exit) -> dict[str, Any]:
    """The pod's status once its containers exited: Succeeded for exit code 0, else Failed."""
    containers = (pod.get("spec") or {}).get("containers") or []
    state = {"terminated": {"exitCode": outcome.code, "reason": outcome.reason, "message": outcome.message}}
    return {
        "phase": "Succeeded" if outcome.code == 0 else "Failed",
        "containerStatuses": [{"name": container.get("name"), "image": container.get("image"), "ready": False,
                               "restartCount": 0, "state": state} for container in containers],
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
    }


def deadline_exceeded_status(seconds: Any) -> dict[str, Any]:
    """The status a kubelet writes when a pod outlives its ``activeDeadlineSeconds``."""
    return {"phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline ({0}s)".format(seconds)}
