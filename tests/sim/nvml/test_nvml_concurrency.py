"""Several processes of one node share its state file without losing updates."""

from __future__ import annotations

import multiprocessing
import os

import pynvml

from gpuops_sim import nvml as sim
from gpuops_sim.nvml.state import StateFile
from nvml_sim_support import install, uninstall


def _fill_with_1g(path: str, gpu: int, queue) -> None:
    """Worker: create 1g GPU instances (each with a CI) until the GPU is full."""
    install(path)
    created = 0
    handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    while True:
        try:
            gi = pynvml.nvmlDeviceCreateGpuInstance(handle, 19)
        except pynvml.NVMLError_InsufficientResources:
            break
        pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
        created += 1
    uninstall()
    queue.put(created)


def test_two_processes_filling_the_same_gpu_share_it_exactly(tmp_path):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "NVIDIA A100-SXM4-40GB", 2, mig_enabled=True)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_fill_with_1g, args=(path, 0, queue)) for _attempt in range(2)]
    workers += [context.Process(target=_fill_with_1g, args=(path, 1, queue))]
    for worker in workers:
        worker.start()
    counts = [queue.get(timeout=60) for _worker in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sum(counts) == 14
    shown = sim.show(path)
    for gpu in shown["gpus"]:
        starts = sorted(gi["placement"]["start"] for gi in gpu["gpu_instances"])
        assert starts == list(range(7))
        assert all(len(gi["compute_instances"]) == 1 for gi in gpu["gpu_instances"])
    uuids = [ci["device_uuid"] for gpu in shown["gpus"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]]
    assert len(set(uuids)) == 14


def test_a_reader_sees_every_write_of_another_process_even_of_the_same_size(tmp_path):
    # The reader keeps its parsed state while the file is unchanged (same inode, size and mtime);
    # a write replaces the file, so even a write that keeps the size is seen at once.
    path = str(tmp_path / "node.json")
    sim.init_node(path, "NVIDIA A100-SXM4-40GB", 1, mig_enabled=True)
    reader = StateFile(path)
    writer = StateFile(path)
    for value in (2, 3, 2, 3):
        before = os.stat(path).st_size
        with writer.transaction() as state:
            state["gpus"][0]["persistence_mode"] = value
        assert os.stat(path).st_size == before
        assert reader.read()["gpus"][0]["persistence_mode"] == value
    assert reader.read() is reader.read(), "an unchanged file is not parsed again"
    reader.close()
