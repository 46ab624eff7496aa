"""The peak resident memory of this process, for logs, memory tests and benchmarks.

`resource.getrusage(...).ru_maxrss` is not this process's own peak on Linux: the kernel carries
the maximum across fork and execve, so a child started by a large process (pytest with torch
loaded, 2 GB late in a suite) reports its parent's peak until it exceeds it. A memory bound
measured that way passes whatever the child does. VmHWM in /proc/self/status belongs to the
process's current address space and starts afresh at execve.
"""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
