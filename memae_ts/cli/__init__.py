"""The `memae-ts` command line.

Each command lives in its own module with a `register(subparsers)` function; this file only
assembles them and turns library errors into one readable line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from memae_ts import __version__
from memae_ts.errors import MemaeError

COMMAND_MODULES = [
    "memae_ts.cli.commands.inspect",
    "memae_ts.cli.commands.fit",
    "memae_ts.cli.commands.refit",
    "memae_ts.cli.commands.score",
    "memae_ts.cli.commands.evaluate",
    "memae_ts.cli.commands.plot",
    "memae_ts.cli.commands.info",
    "memae_ts.cli.commands.demo_data",
    "memae_ts.cli.commands.export",
    "memae_ts.cli.commands.upgrade",
    "memae_ts.edge.cli",
]

DESCRIPTION = """\
Unsupervised anomaly detection for industrial sensor data with a memory-augmented autoencoder.

Typical use:
  memae-ts inspect history.csv                     how the file is read (check this first)
  memae-ts fit history.csv -o pump-model           learn normal operation
  memae-ts score pump-model today.csv -o scores.csv
  memae-ts evaluate pump-model labelled.csv --label-column anomaly
  memae-ts plot pump-model today.csv -o today.png
  memae-ts info pump-model

Run 'memae-ts COMMAND --help' for the options and examples of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memae-ts", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"memae-ts {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a command whose optional part is not installed
            logging.getLogger(__name__).debug("command module %s unavailable: %s", name, exc)
            continue
        module.register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("memae_ts").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    warnings.showwarning = _show_warning
    try:
        result = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except MemaeError as exc:
        print(f"memae-ts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `memae-ts score ... | head`: the reader left. Nothing more can be written to stdout,
        # and the interpreter's last flush must not turn that into a traceback.
        _detach_stdout()
        print(f"memae-ts {args.command}: error: output closed early (broken pipe)", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system error: missing directory, permission, disk full
        print(f"memae-ts {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _describe(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename is not None else what


def _detach_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
