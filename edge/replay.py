"""``memae-ts replay``: produce a sensor CSV into Kafka as reading messages, at a chosen rate.

For demos, tests and benchmarks: the messages follow the input contract (docs/edge.md), one per
row, key = asset, in file order. Values are sent exactly as read (missing -> ``null``) so the
daemon sees what offline scoring sees.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kafka import KafkaProducer
from memae_ts.connectors.messages import encode_reading_compact, encode_reading_object

log = logging.getLogger(__name__)

TIME_COLUMNS = ("timestamp", "datetime", "time", "date", "ts")


def _iso(series: pd.Series, source: str) -> list[str]:
    """One time format for the whole column, as `fit` and `score` read it (never per value)."""
    from memae_ts.io.timeparse import parse_time_column

    rows = np.arange(len(series), dtype=np.int64) + 2
    times, _ = parse_time_column(series, source=source, column=str(series.name), rows=rows)
    text = times.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(r"\.000000Z$", "Z", regex=True)
    return list(text)


def read_messages(
    csv_path: str | Path,
    *,
    asset: str = "asset-1",
    asset_column: str | None = None,
    time_column: str | None = None,
    sensors: list[str] | None = None,
    compact: bool = False,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs for every row of the CSV.

    ``sensors`` fixes which columns are sent and, for ``compact``, their order (the bundle's);
    without it every numeric column except time, asset and label columns is sent.
    """
    frame = pd.read_csv(csv_path)
    if time_column is None:
        time_column = next((c for c in frame.columns if c.lower() in TIME_COLUMNS), None)
    if time_column is None:
        raise ValueError(f"{csv_path}: no time column found; pass --time-column")
    if asset_column is None and "asset" in frame.columns:
        asset_column = "asset"
    if sensors is None:
        skip = {time_column, asset_column, "anomaly", "label", "changepoint"}
        sensors = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    if compact and not sensors:
        raise ValueError("compact form needs the sensor order (--model)")
    times = _iso(frame[time_column], str(csv_path))
    assets = frame[asset_column].astype(str).tolist() if asset_column else [asset] * len(frame)
    values = frame[sensors].to_numpy(dtype=np.float64)
    for i in range(len(frame)):
        row: list[float | None] = [None if math.isnan(v) else float(v) for v in values[i]]
        if compact:
            value = encode_reading_compact(times[i], row)
        else:
            value = encode_reading_object(assets[i], times[i], dict(zip(sensors, row, strict=True)))
        yield assets[i].encode(), value


def replay(
    messages: Iterable[tuple[bytes | None, bytes | None]],
    producer: KafkaProducer,
    topic: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    flush_timeout: float | None = None,
) -> int:
    """Send ``messages`` at ``rate`` per second (0 = as fast as possible); returns the count."""
    start = time.monotonic()
    sent = 0
    for key, value in messages:
        if limit is not None and sent >= limit:
            break
        if rate > 0:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=key, value=value)
        sent += 1
    producer.flush(timeout=flush_timeout)
    return sent


def sensors_of_bundle(model_dir: str | Path) -> list[str]:
    config: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
    return list(config["sensors"])
