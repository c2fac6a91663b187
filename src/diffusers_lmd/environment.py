"""Where a benchmark ran: the device in words and the commit, recorded beside every result."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def describe_hardware(device: torch.device | str) -> str:
    """``"1x <GPU name>"`` on CUDA, else the CPU model, its cores and the number of threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        name = models[0] if models else name
    threads = torch.get_num_threads()
    return f"{name} ({os.cpu_count()} cores), {threads} thread{'s' if threads != 1 else ''}"


def git_commit(path: str) -> str | None:
    """The short commit checked out at ``path`` (``None`` outside a git checkout or without git)."""
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None
