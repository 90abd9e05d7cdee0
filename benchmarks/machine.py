"""The machine a benchmark ran on, and a process's memory as Linux reports it."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures depend on; the load average says how busy the machine was (it is read again at the end)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_available": cores,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "gradio": _version("gradio"),
        "gradio_client": _version("gradio_client"),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def process_memory(pid: int) -> dict[str, float | None]:
    """Peak (VmHWM) and current resident set of a process, with its anonymous and file-backed parts, in MiB."""
    fields = {"VmHWM": "peak_rss_mib", "VmRSS": "rss_mib", "RssAnon": "rss_anon_mib", "RssFile": "rss_file_mib"}
    found: dict[str, float | None] = dict.fromkeys(fields.values())
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                found[fields[key]] = round(int(value.split()[0]) / 1024, 1)  # kB
    return found


# -- the app in its own process ----------------------------------------------------------------------------------
