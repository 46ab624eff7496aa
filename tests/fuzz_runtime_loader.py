"""atheris fuzz target for the runtime's bundle loader, through the Python bindings.

    python tests/fuzz_runtime_loader.py -runs=5000 [corpus_dir]

The input is split into config.json and model.safetensors bytes (first two bytes: config
length). Every input must load or raise BundleError; a loaded model must score a window or
raise DataError. Anything else (another exception, a crash) is a finding. The C++ side has its
own libFuzzer-style target (cpp/tests/fuzz_loader.cpp) that ctest runs under ASan/UBSan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["memae_ts"]):
    from memae_ts.errors import BundleError, DataError
    from memae_ts.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bundles import random_bundle


def seed_input() -> bytes:
    """A valid bundle in the target's input layout (written to the corpus directory)."""
    from safetensors.numpy import save

    config, weights = random_bundle("mlp", n_sensors=2, window=4, hidden=(3,), latent=2, slots=5, seed=1)
    raw = json.dumps(config).encode()
    return len(raw).to_bytes(2, "little") + raw + save(weights)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    n = min(int.from_bytes(data[:2], "little"), len(data) - 2)
    try:
        runtime = Runtime.from_bytes(data[2 : 2 + n], data[2 + n :])
    except BundleError:
        return
    if runtime.window * len(runtime.sensors) > 4096:
        return
    try:
        runtime.score(np.zeros((1, runtime.window, len(runtime.sensors)), np.float32))
    except DataError:
        pass


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for directory in corpus:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "seed").write_bytes(seed_input())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
