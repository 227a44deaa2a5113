"""Simulator of NVIDIA GPUs (NVML) and of a Kubernetes cluster, for rehearsing gpuops.nvidia rollouts."""
