"""Ansible plugins of the simulator (not of the collection): see connection/gpuops_sim_node.py."""
