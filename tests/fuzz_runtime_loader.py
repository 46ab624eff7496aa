"""atheris fuzz target for the runtime's bundle loader, through the Python bindings.

    python tests/fuzz_runtime_loader.py -runs=5000 [corpus_dir]

The input is the layout of cpp/fuzz/fuzz_loader.cpp (u16 config length, bit 15 = keep the
model_id as is, else it is stamped). Every input must load in both readers or be refused by
both with BundleError; a loaded model must score a window like the numpy engine. Anything else
(another exception, a disagreement, a crash) is a finding. The C++ side is instrumented by its
own libFuzzer targets (cpp/fuzz, run by scripts/run-ctest.sh); this one covers the Python reader
and the bindings, and tests/test_fuzz_differential.py replays the C++ corpus through both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["memae_ts"]):
    from memae_ts.engines.bundle import decode_bundle, stamp
    from memae_ts.engines.engine_numpy import NumpyEngine
    from memae_ts.engines.runtime import Runtime
    from memae_ts.errors import BundleError, DataError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bundles import random_bundle, split_fuzz_input


def seed_input() -> bytes:
    """A valid bundle in the target's input layout (written to the corpus directory)."""
    from safetensors.numpy import save

    config, weights = random_bundle("mlp", n_sensors=2, window=4, hidden=(3,), latent=2, slots=5, seed=1)
    tensors = save(weights)
    raw = stamp(json.dumps(config).encode(), tensors)
    return len(raw).to_bytes(2, "little") + raw + tensors


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    config, tensors = split_fuzz_input(data)
    try:
        runtime = Runtime.from_bytes(config, tensors)
    except BundleError:
        runtime = None
    try:
        bundle = decode_bundle(config, tensors)
    except BundleError as exc:
        if runtime is not None and "resample" not in str(exc) and "reading" not in str(exc):
            raise AssertionError(f"C++ accepts, Python refuses: {exc}") from None
        return
    if runtime is None:
        raise AssertionError("Python accepts, C++ refuses")
    if runtime.window * len(runtime.sensors) > 4096:
        return
    x = np.zeros((1, runtime.window, len(runtime.sensors)), np.float32) + np.float32(0.5)
    try:
        got = runtime.score(x)[0]
    except DataError:
        return
    want = NumpyEngine(bundle).score(x)[0]
    if bundle.config["network"]["memory"] is None and np.isfinite(want).all() and (abs(want) < 1e30).all():
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for directory in corpus:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "seed").write_bytes(seed_input())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
