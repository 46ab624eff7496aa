"""memae_ts.peak_rss: a child's peak is its own, not the peak of the process that started it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from memae_ts.peak_rss import peak_rss_bytes


def test_a_child_of_a_large_process_reports_its_own_peak() -> None:
    """ru_maxrss of a child started here would report the 1.2 GB ballast (Linux carries it
    across fork and execve), which made the streamed-fit memory bound pass vacuously."""
    ballast = np.ones(1_200_000_000 // 8)
    assert peak_rss_bytes() >= ballast.nbytes
    child = subprocess.run(
        [sys.executable, "-c", "from memae_ts.peak_rss import peak_rss_bytes; print(peak_rss_bytes())"],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert 1e6 < int(child.stdout) < 400e6, int(child.stdout)
