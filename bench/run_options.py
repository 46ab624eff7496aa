"""Options every quality benchmark takes: torch threads and verbosity."""

from __future__ import annotations

import argparse
import logging
import os


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def apply_run_options(args: argparse.Namespace) -> None:
    """Before any training: the thread count reaches torch through MEMAE_TS_THREADS."""
    os.environ["MEMAE_TS_THREADS"] = str(args.threads)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
