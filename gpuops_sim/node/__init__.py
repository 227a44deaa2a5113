"""A simulated node's host: its systemd units, its kubelet, and its reboots (see boot.py)."""
