"""What was read, decided, dropped and filled: the summary `inspect` and `fit` print.

Silent decisions are the enemy: every guess the reader makes (encoding, separator, decimal
mark, time format, time zone) and everything it drops or fills (text columns, quality markers,
duplicate timestamps, labelled fault rows, forward-filled cells, splits) is counted here, shown
to the user and stored in the bundle, so a model can always say what data it learned from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

EMPTY = "(empty/NA)"


@dataclass
class DataSummary:
    source: str
    file_format: str
    rows_read: int = 0
    encoding: str | None = None
    separator: str | None = None
    decimal: str = "."
    skipped_rows: int = 0
    blank_lines: int = 0
    time: dict[str, Any] | None = None
    sensors: list[str] = field(default_factory=list)
    ignored: list[list[str]] = field(default_factory=list)  # [column, reason]
    missing: dict[str, dict[str, int]] = field(default_factory=dict)  # sensor -> marker -> cells
    unsorted: bool = False
    duplicates_dropped: int = 0
    asset_column: str | None = None
    assets: int = 1
    suspected_asset: list[str] | None = None  # [column, why]
    label_column: str | None = None
    labelled_rows: int | None = None
    first_time: str | None = None
    last_time: str | None = None
    period_seconds: float | None = None
    sampling: str | None = None
    irregular: bool = False
    resample: dict[str, Any] | None = None
    gaps: dict[str, Any] | None = None
    training: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSummary:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    # ------------------------------------------------------------------ text
    def dialect_line(self) -> str:
        if self.file_format != "csv":
            return self.file_format
        sep = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}.get(
            self.separator or "", repr(self.separator)
        )
        parts = [f"csv, {self.encoding}", f"separator {sep}", f"decimal mark '{self.decimal}'"]
        if self.skipped_rows:
            parts.append(f"{self.skipped_rows} row(s) under the header skipped (--skip-rows)")
        if self.blank_lines:
            parts.append(f"{self.blank_lines} blank line(s) skipped")
        return ", ".join(parts)

    def time_lines(self) -> list[str]:
        if self.time is None:
            return ["time           none: rows are taken as equally spaced, in file order"]
        out = [
            f"time column    {self.time['column']!r}, format {self.time['format']} ({self.time['reason']})",
            f"time zone      {self.time['timezone']}",
        ]
        for raw, parsed in self.time.get("examples", []):
            out.append(f"  {raw!r:>32} -> {parsed}")
        if self.first_time:
            out.append(f"time range     {self.first_time} .. {self.last_time}")
        if self.sampling:
            out.append(f"sampling       {self.sampling}")
        return out

    def missing_total(self) -> dict[str, int]:
        return {sensor: sum(counts.values()) for sensor, counts in self.missing.items()}

    def missing_lines(self) -> list[str]:
        out = []
        for sensor, counts in self.missing.items():
            if not counts:
                continue
            parts = ", ".join(
                f"{marker!r} {n}" if marker != EMPTY else f"{marker} {n}" for marker, n in counts.items()
            )
            out.append(f"  {sensor}: {sum(counts.values())} missing ({parts})")
        return out

    def gap_lines(self) -> list[str]:
        if not self.gaps:
            return []
        g = self.gaps
        out = [
            f"stretches      {g['segments']} without gaps; rows in at least one window of {g['window']}: "
            f"{g['rows_in_windows']} of {g['rows']} ({_share(g['rows_in_windows'], g['rows'])})",
        ]
        if g.get("time_splits"):
            out.append(f"  time gaps over {g['max_gap_seconds']:.6g} s: {g['time_splits']} split(s)")
        for sensor in self.sensors:
            filled = g["filled"].get(sensor, 0)
            left = g["unfilled"].get(sensor, 0)
            if filled or left:
                out.append(
                    f"  {sensor}: {filled} cell(s) forward-filled (up to {g['max_fill']} rows), "
                    f"{left} left missing (the series splits there)"
                )
        return out

    def fit_lines(self) -> list[str]:
        """What fitting added to the summary: the grid, the gap rules' effect, labelled rows."""
        lines = [f"resampled      {self.resample['description']}"] if self.resample else []
        lines += self.gap_lines()
        if self.training:
            lines.append(f"training       {self.training['note']}")
        return lines

    def format(self, *, short: bool = False) -> str:
        """The long form for `inspect`, a few lines for `fit`."""
        lines = [f"data           {self.source}: {self.rows_read} rows, {self.dialect_line()}"]
        lines += self.time_lines()[: 2 if short else None]
        if short and self.first_time:
            lines.append(f"time range     {self.first_time} .. {self.last_time}")
            if self.sampling:
                lines.append(f"sampling       {self.sampling}")
        lines.append(f"sensors ({len(self.sensors)})    {', '.join(self.sensors)}")
        for column, reason in self.ignored:
            lines.append(f"  ignored {column!r}: {reason}")
        lines += self.missing_lines()
        if self.asset_column:
            lines.append(f"machines       {self.assets} in column {self.asset_column!r}")
        if self.suspected_asset:
            column, why = self.suspected_asset
            lines.append(
                f"machines?      column {column!r} looks like a machine name ({why}): --asset-column {column}"
            )
        if self.unsorted:
            lines.append("order          rows were not in time order: sorted")
        if self.duplicates_dropped:
            lines.append(
                f"duplicates     {self.duplicates_dropped} row(s) repeating a timestamp dropped (first kept)"
            )
        if self.label_column:
            lines.append(
                f"labels         column {self.label_column!r}: {self.labelled_rows} row(s) labelled anomalous"
            )
        lines += self.fit_lines()
        return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def gap_counts(
    raw: np.ndarray, filled: np.ndarray, sensors: list[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Per sensor: cells forward-filled and cells left missing (which split the series)."""
    was_missing = np.isnan(raw)
    still_missing = np.isnan(filled)
    filled_cells = (was_missing & ~still_missing).sum(axis=0)
    left = still_missing.sum(axis=0)
    return (
        {s: int(n) for s, n in zip(sensors, filled_cells, strict=True) if n},
        {s: int(n) for s, n in zip(sensors, left, strict=True) if n},
    )
