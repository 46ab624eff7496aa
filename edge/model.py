"""Loading a bundle for serving: the engine plus what the stream needs to window and label.

Why a content hash as the model version: it names exactly the files being served, so a score
record, the ``memae_ts_model_info`` metric and the bundle on disk can be matched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from connectors.processor import ServedModel
from memae_ts.resample import ResampleSpec


def bundle_version(bundle_dir: str | Path) -> str:
    """First 12 hex digits of sha256 over config.json and model.safetensors."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(bundle_dir) / name
        if path.exists():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:12]


def _threshold(bundle: Any) -> float:
    value = bundle.threshold
    if isinstance(value, dict):
        value = value["value"]
    return float(value)


def load_served_model(bundle_dir: str | Path, engine: str = "auto", threads: int = 1) -> ServedModel:
    from memae_ts.engines import load_engine  # core package; imported late for fast --help

    eng = load_engine(str(bundle_dir), engine=engine, threads=threads)
    bundle = eng.bundle
    config: dict[str, Any] = dict(getattr(bundle, "config", {}) or {})
    gap = config.get("max_gap_seconds")
    # A model fitted on resampled data is served on the same grid; its windows are then split
    # only by missing grid values, as offline after resampling.
    raw = config.get("resample")
    resample = ResampleSpec.from_config(raw) if raw is not None else None
    threshold = _threshold(bundle)
    if not threshold > 0:
        raise ValueError(f"bundle threshold must be positive, got {threshold}")
    return ServedModel(
        engine=eng,
        sensors=list(bundle.sensors),
        window=int(bundle.window),
        threshold=threshold,
        version=str(getattr(bundle, "model_version", "") or bundle_version(bundle_dir)),
        engine_name=str(getattr(eng, "name", type(eng).__name__)),
        max_gap_seconds=float(gap) if gap is not None and resample is None else None,
        max_fill_rows=int(config.get("max_fill_rows") or 0) if resample is None else 0,
        resample=resample,
    )
