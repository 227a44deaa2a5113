"""NVML return codes and the strings the driver reports for them.

The simulator keeps its own copy of the codes so that the state and CLI layers work without
importing pynvml (the ``nvidia-smi`` stand-in runs on any Python 3 interpreter).
"""

from __future__ import annotations

SUCCESS = 0
UNINITIALIZED = 1
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NO_PERMISSION = 4
ALREADY_INITIALIZED = 5
NOT_FOUND = 6
INSUFFICIENT_SIZE = 7
INSUFFICIENT_POWER = 8
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
IRQ_ISSUE = 11
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
CORRUPTED_INFOROM = 14
GPU_IS_LOST = 15
RESET_REQUIRED = 16
OPERATING_SYSTEM = 17
LIB_RM_VERSION_MISMATCH = 18
IN_USE = 19
MEMORY = 20
NO_DATA = 21
VGPU_ECC_NOT_SUPPORTED = 22
INSUFFICIENT_RESOURCES = 23
FREQ_NOT_SUPPORTED = 24
ARGUMENT_VERSION_MISMATCH = 25
DEPRECATED = 26
NOT_READY = 27
GPU_NOT_FOUND = 28
INVALID_STATE = 29
RESET_TYPE_NOT_SUPPORTED = 30
UNKNOWN = 999

NAMES: dict[int, str] = {
    value: name for name, value in globals().items() if name.isupper() and isinstance(value, int)
}

# What nvmlErrorString returns (nvidia-smi prints the same text).
STRINGS: dict[int, str] = {
    SUCCESS: "Success",
    UNINITIALIZED: "Uninitialized",
    INVALID_ARGUMENT: "Invalid Argument",
    NOT_SUPPORTED: "Not Supported",
    NO_PERMISSION: "Insufficient Permissions",
    ALREADY_INITIALIZED: "Already Initialized",
    NOT_FOUND: "Not Found",
    INSUFFICIENT_SIZE: "Insufficient Size",
    INSUFFICIENT_POWER: "Insufficient External Power",
    DRIVER_NOT_LOADED: "Driver Not Loaded",
    TIMEOUT: "Timeout",
    IRQ_ISSUE: "Interrupt Request Issue",
    LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    FUNCTION_NOT_FOUND: "Function Not Found",
    CORRUPTED_INFOROM: "Corrupted infoROM",
    GPU_IS_LOST: "GPU is lost",
    RESET_REQUIRED: "GPU requires restart",
    OPERATING_SYSTEM: "The operating system has blocked the request.",
    LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    IN_USE: "In use by another client",
    MEMORY: "Insufficient Memory",
    NO_DATA: "No data",
    VGPU_ECC_NOT_SUPPORTED: "The requested vgpu operation is not available on target device, because ECC is enabled",
    INSUFFICIENT_RESOURCES: "Insufficient Resources",
    FREQ_NOT_SUPPORTED: "Frequency not supported",
    ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    DEPRECATED: "Deprecated",
    NOT_READY: "Not Ready",
    GPU_NOT_FOUND: "GPU not found",
    INVALID_STATE: "Invalid state",
    RESET_TYPE_NOT_SUPPORTED: "Reset type not supported",
    UNKNOWN: "Unknown Error",
}


class NvmlError(Exception):
    """An NVML failure inside the simulator; the fake library turns it into its return code."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{NAMES.get(code, code)}: {detail}" if detail else NAMES.get(code, str(code)))


def error_string(code: int) -> str:
    return STRINGS.get(code, "Unknown Error")


def parse_code(text: str | int) -> int:
    """Accept 19, "19", "IN_USE", "in_use" or "NVML_ERROR_IN_USE"; raise ValueError otherwise."""
    if isinstance(text, int):
        value = text
    else:
        cleaned = text.strip()
        if cleaned.isdigit():
            value = int(cleaned)
        else:
            name = cleaned.upper()
            for prefix in ("NVML_ERROR_", "ERROR_"):
                if name.startswith(prefix):
                    name = name[len(prefix):]
            if name not in NAMES.values():
                raise ValueError(f"unknown NVML error code {text!r}; use a number or a name such as IN_USE")
            value = next(code for code, known in NAMES.items() if known == name)
    if value not in NAMES or value == SUCCESS:
        raise ValueError(f"unknown or non-error NVML code {text!r}")
    return value
