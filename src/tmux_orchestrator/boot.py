"""Which boot of the machine this is: tells a reboot from a plain daemon restart."""

from __future__ import annotations

import os
import subprocess


def boot_id() -> str:
    """An id that changes at every boot and only then.

    Linux: ``/proc/sys/kernel/random/boot_id``. macOS/BSD: ``sysctl kern.boottime``. Containers
    that share the host's boot id can set ``TMO_BOOT_ID`` to something of their own.
    """
    override = os.environ.get("TMO_BOOT_ID")
    if override:
        return override
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["sysctl", "-n", "kern.boottime"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown"
