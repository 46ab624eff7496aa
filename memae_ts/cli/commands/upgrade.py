"""`memae-ts upgrade`: convert a format-1 bundle to the current format (with its integrity id)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from memae_ts.cli.commands.common import formatter

EPILOG = """\
examples:
  memae-ts upgrade pump-model                  rewrite the bundle in place (atomically)
  memae-ts upgrade old-model -o pump-model-v2

Format 1 bundles carry an id over their parsed config and weights that no loader checked; this
command checks it (so a half-copied format-1 bundle is refused, not converted) and writes the
bundle again with the format-2 integrity id that every engine checks on load.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "upgrade",
        help="convert an older model bundle to the current format",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("-o", "--output", help="write the converted bundle here (default: replace MODEL)")
    p.set_defaults(handler=run)


def legacy_model_id(config: dict[str, Any], weights: dict[str, np.ndarray]) -> str:
    """The format-1 id: sha256 over the sorted-keys JSON of the config (without model_id and
    created_at) and the named float32 tensors, first 12 hex digits."""
    digest = hashlib.sha256()
    stable = {k: v for k, v in config.items() if k not in ("model_id", "created_at")}
    digest.update(json.dumps(stable, sort_keys=True).encode())
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def run(args: argparse.Namespace) -> int:
    from memae_ts.engines.bundle import (
        CONFIG_FILE,
        FORMAT_VERSION,
        MAX_FORMAT_VERSION,
        WEIGHTS_FILE,
        load_bundle,
        make_bundle,
        read_json,
        read_safetensors,
        save_bundle,
    )
    from memae_ts.errors import BundleError

    root = Path(args.model)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (root / name).is_file():
            raise BundleError(f"{root}: {name} is missing; not a memae-ts model bundle")
    config, _ = read_json((root / CONFIG_FILE).read_bytes(), str(root / CONFIG_FILE))
    if not isinstance(config, dict):
        raise BundleError(f"{root / CONFIG_FILE}: top level must be a JSON object")
    version = config.get("format_version")
    if version in (FORMAT_VERSION, MAX_FORMAT_VERSION):  # 3: a bundle with a score reduction
        load_bundle(root)  # checks it
        print(f"{root}: already format {version}; nothing to do", file=sys.stderr)
        return 0
    if version != 1:
        raise BundleError(f"{root / CONFIG_FILE}: format_version {version!r} cannot be upgraded")
    weights = read_safetensors((root / WEIGHTS_FILE).read_bytes(), str(root / WEIGHTS_FILE))
    stored, computed = config.get("model_id"), legacy_model_id(config, weights)
    if stored != computed:
        raise BundleError(
            f"{root}: {CONFIG_FILE} and {WEIGHTS_FILE} do not belong together: {CONFIG_FILE} names model "
            f"{stored}, the two files hash to {computed} (format 1 id); copy the whole bundle again"
        )
    bundle = save_bundle(args.output or root, make_bundle(config, weights))
    print(
        f"{bundle.path}: format {FORMAT_VERSION}, model {bundle.model_version} (was {stored})",
        file=sys.stderr,
    )
    return 0
