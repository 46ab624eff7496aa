"""Loading a bundle for serving: the engine plus what the stream needs to window and label.

Why a content hash as the model version: it names exactly the files being served, so a score
record, the ``memae_ts_model_info`` metric and the bundle on disk can be matched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from memae_ts.connectors.drift import TrainingRange
from memae_ts.connectors.processor import ServedModel

from memae_ts.detection.alarms import AlarmRule
from memae_ts.detection.hop import model_period_seconds
from memae_ts.detection.tails import TailModel
from memae_ts.io.resample import ResampleSpec


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


def bundle_files(bundle_dir: str | Path) -> tuple[Any, ...]:
    """(inode, size, mtime) of config.json and model.safetensors, None for a missing one: what
    changes when a bundle is copied over or renamed into place, without reading it."""
    out: list[Any] = []
    for name in ("config.json", "model.safetensors"):
        try:
            st = (Path(bundle_dir) / name).stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _threshold(bundle: Any) -> float:
    value = bundle.threshold
    if isinstance(value, dict):
        value = value["value"]
    return float(value)


def training_end(config: dict[str, Any]) -> float | None:
    """Unix time of the newest training reading (``data.last_time``), None when unknown."""
    from datetime import datetime, timezone

    raw = (config.get("data") or {}).get("last_time")
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def load_served_model(
    bundle_dir: str | Path,
    engine: str = "auto",
    threads: int = 1,
    name: str = "default",
    follow: Any = None,
) -> ServedModel:
    """``follow`` (memae_ts.detection.following.FollowSettings) lets the memory follow slow drift."""
    from memae_ts.detection.modes import MemoryScorer, Modes
    from memae_ts.engines import load_engine  # core package; imported late for fast --help

    eng = load_engine(str(bundle_dir), engine=engine, threads=threads)
    bundle = eng.bundle
    if follow is not None:
        from memae_ts.detection.following import DriftFollower

        eng = MemoryScorer(eng, DriftFollower(eng, follow))
    elif Modes.of(bundle) is not None:  # mode and novelty fields in every score record
        eng = MemoryScorer(eng)
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
        name=name,
        training_range=TrainingRange.from_config(config, list(bundle.sensors)),
        training_end=training_end(config),
        # The alarm rule and tail model the bundle stores (a bundle older than them: the
        # default rule, and score records without tail_probability), as `memae-ts score` uses.
        alarm_rule=AlarmRule.from_config(config.get("alarm")),
        tail=TailModel.from_config(config.get("tail")),
        period_seconds=model_period_seconds(config),  # what a scoring hop counts in
    )
