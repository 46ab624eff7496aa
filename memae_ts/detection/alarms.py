"""The causal alarm rule: from one normalised score per window to alarms an operator can trust.

A raw ``normalised_score >= 1`` per window chatters: one noisy window is an alarm, a fault that
hovers around the threshold is dozens of alarms. The rule here is the classic alarm-management
toolbox (ISA-18.2 / EEMUA 191: on-delay, deadband, minimum on-time), counted in **windows**:

* **persistence** (on-delay): the alarm is raised at the window where at least ``k`` of the last
  ``n`` windows of the stretch reach ``raise_level`` (1.0 = the model's threshold);
* **hysteresis** (deadband): once raised, it stays on while at least ``k`` of the last ``n``
  windows reach the lower ``clear_level``; it clears at the first window where fewer do;
* **minimum duration** (minimum on-time): a raised alarm stays on for at least ``min_windows``
  windows, so one episode is not cut into several by a short dip.

An **episode** is one run of the alarm being on: asset, start (the window at which it was
raised), end (the last window with the alarm on), peak normalised score and its time, the top
sensors (by their share of the reconstruction error summed over the episode's windows) and
the number of windows. Why windows and not rows: a later scoring hop may score every k-th
window, and "3 of the last 5 windows" must keep meaning evidence from 3 scores.

Causal and stepwise: the decision at a window uses that window and earlier ones only, and the
state (:class:`AlarmState`) is carried from one batch to the next, so feeding windows one at a
time (the edge daemon), in slices of a poll, or a whole file at once (``memae-ts score``) gives
the same alarms and episodes. The same class serves all of them.

**Gaps.** Windows never span a gap (``memae_ts.io.windows``), and neither does the rule's memory:
the first window of a new stretch (after a time gap, a dropout longer than the fill limit, a
daemon restart's warm-up) forgets the last ``n`` windows, and an episode still open is closed
at its last window with ``end_reason = "gap"``: nobody can vouch for what the machine did while
no window could be scored, and the episode record says it ended by a gap, not by returning to
normal. An episode open at the end of the data has ``end_reason = "open"``.

**Restarts.** :meth:`AlarmState.snapshot` is the whole state as a small versioned JSON-able
dict and :meth:`AlarmState.restore` takes one over (refusing, with a reason, one of another
version, rule or sensor count): the edge daemon keeps them across a restart or rebalance
(``memae_ts/connectors/alarm_state.py``), so a fault spanning a restart stays one episode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from memae_ts.errors import DataError

END_REASONS = ("cleared", "gap", "open")
# Up to this many windows per call, the rule's counts are taken in plain Python (AlarmState._counts_small).
_SMALL = 8


@dataclass(frozen=True)
class AlarmRule:
    """Persistence ``k`` of ``n`` windows at ``raise_level``, clearing below ``clear_level``,
    on for at least ``min_windows`` windows. ``AlarmRule.raw()`` is the old per-window rule.

    The defaults (3 of 5, clear at 0.9, at least 5 windows) were chosen on normal data only:
    see docs/benchmarks.md ("Alarm rule defaults") and ``bench/alarm_rule.py``.
    """

    k: int = 3
    n: int = 5
    raise_level: float = 1.0
    clear_level: float = 0.9
    min_windows: int = 5

    @classmethod
    def raw(cls) -> AlarmRule:
        """Every window at or above the threshold is an alarm (no persistence, no deadband)."""
        return cls(k=1, n=1, raise_level=1.0, clear_level=1.0, min_windows=1)

    def validate(self) -> AlarmRule:
        """Checked values, or a DataError naming the parameter (the CLI turns it into exit 2)."""
        if not (isinstance(self.n, int) and 1 <= self.n <= 10_000):
            raise DataError(f"alarm rule: n (windows looked at) must be in 1..10000, got {self.n!r}")
        if not (isinstance(self.k, int) and 1 <= self.k <= self.n):
            raise DataError(f"alarm rule: k must be an integer in 1..n ({self.n}), got {self.k!r}")
        if not (isinstance(self.min_windows, int) and 1 <= self.min_windows <= 10_000_000):
            raise DataError(f"alarm rule: min_windows must be a positive integer, got {self.min_windows!r}")
        raise_level, clear_level = float(self.raise_level), float(self.clear_level)
        if not (math.isfinite(raise_level) and raise_level > 0):
            raise DataError(f"alarm rule: raise_level must be a positive number, got {self.raise_level!r}")
        if not (math.isfinite(clear_level) and 0 < clear_level <= raise_level):
            raise DataError(
                f"alarm rule: clear_level must be in (0, raise_level={raise_level:g}], "
                f"got {self.clear_level!r}"
            )
        return self

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, raw: Any) -> AlarmRule:
        """The rule stored in a bundle; a bundle written before the rule existed (no ``alarm``
        key) gets the defaults, as documented in docs/bundle-format.md."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise DataError(f"bundle alarm rule must be an object, got {type(raw).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known}).validate()

    def replace(self, **changes: Any) -> AlarmRule:
        """A copy with the given fields changed (None values are ignored: not given)."""
        values = {**self.to_config(), **{k: v for k, v in changes.items() if v is not None}}
        return AlarmRule(**values).validate()

    def describe(self) -> str:
        return (
            f"{self.k} of {self.n} windows >= {self.raise_level:g} raise, clears when fewer than "
            f"{self.k} of {self.n} reach {self.clear_level:g}, on for at least {self.min_windows} window(s)"
        )


@dataclass
class Episode:
    """One run of the alarm being on, for one asset. Times are what the caller passed (epoch
    seconds, or row numbers without a time column)."""

    asset: str
    start: float
    end: float
    peak: float
    peak_time: float
    windows: int
    contributions: np.ndarray  # summed over the episode's windows (per sensor)
    end_reason: str = "open"

    def top_sensors(self, sensors: list[str], k: int = 3) -> list[tuple[str, float]]:
        """The k sensors with the largest share of the error summed over the episode."""
        c = np.nan_to_num(self.contributions, nan=0.0)
        total = float(c.sum()) or 1.0
        order = np.argsort(-c, kind="stable")[: min(k, c.size)]
        return [(sensors[j], float(c[j] / total)) for j in order]


@dataclass
class AlarmEvents:
    """What one call of :meth:`AlarmState.run` produced: the alarm flag per window, and the
    episodes opened and closed (an episode can be both, within one batch)."""

    alarm: np.ndarray
    opened: list[Episode] = field(default_factory=list)
    closed: list[Episode] = field(default_factory=list)


class AlarmState:
    """The rule's state for one asset, carried between batches (see the module docstring)."""

    def __init__(self, rule: AlarmRule, asset: str = "", n_sensors: int = 0) -> None:
        self.rule = rule.validate()
        self.asset = asset
        self.n_sensors = n_sensors
        # The last n-1 windows' flags of the current stretch (raise, clear; 0/1), oldest first.
        # Python lists: a slow asset steps the rule with a window or two per poll, where array
        # conversions would cost more than the counting (_counts_small).
        self._hist_raise: list[int] = []
        self._hist_clear: list[int] = []
        self.active = False
        self._on = 0  # windows the alarm has been on
        self.episode: Episode | None = None
        self._last_time: float | None = None  # the end of the last window stepped
        self._rule_config = self.rule.to_config()  # for snapshots (asdict is slow)

    def run(
        self,
        times: np.ndarray,
        normalised: np.ndarray,
        contributions: np.ndarray | None = None,
        new_stretch: np.ndarray | None = None,
    ) -> AlarmEvents:
        """Step the rule through consecutive windows of this asset (in time order).

        ``new_stretch[i]`` is True where window i is the first of a stretch (after a gap): the
        persistence memory is forgotten there and an open episode closes with ``gap``. A
        non-finite score counts as below both levels.
        """
        m = len(normalised)
        alarm = np.zeros(m, dtype=bool)
        events = AlarmEvents(alarm)
        if m == 0:
            return events
        times = np.asarray(times, dtype=np.float64)
        values = np.asarray(normalised, dtype=np.float64)
        if contributions is None:
            contributions = np.zeros((m, self.n_sensors))
        breaks = [0]
        first_is_new = False
        if new_stretch is not None:
            new_stretch = np.asarray(new_stretch, dtype=bool)
            if new_stretch.any():
                breaks += [int(i) for i in np.flatnonzero(new_stretch) if i > 0]
                first_is_new = bool(new_stretch[0])
        breaks.append(m)
        for j in range(len(breaks) - 1):
            lo, hi = breaks[j], breaks[j + 1]
            if j > 0 or first_is_new:
                self._gap(events)
            self._run_stretch(times[lo:hi], values[lo:hi], contributions[lo:hi], alarm[lo:hi], events)
        return events

    def _gap(self, events: AlarmEvents) -> None:
        self._hist_raise = []
        self._hist_clear = []
        if self.episode is not None:
            self.episode.end_reason = "gap"
            events.closed.append(self.episode)
            self.episode = None
        self.active = False
        self._on = 0

    def _run_stretch(
        self,
        times: np.ndarray,
        values: np.ndarray,
        contributions: np.ndarray,
        alarm: np.ndarray,
        events: AlarmEvents,
    ) -> None:
        rule = self.rule
        n, k = rule.n, rule.k
        if len(values) <= _SMALL:
            count_up, count_keep = self._counts_small(values)
        else:
            finite = np.isfinite(values)
            up = (finite & (values >= rule.raise_level)).astype(np.int64)
            keep = (finite & (values >= rule.clear_level)).astype(np.int64)
            h = len(self._hist_raise)
            ups = np.concatenate([np.asarray(self._hist_raise, dtype=np.int64), up])
            keeps = np.concatenate([np.asarray(self._hist_clear, dtype=np.int64), keep])
            # Windows among the last n (within the stretch) at each level, for each new window.
            c_up = np.cumsum(np.concatenate([[0], ups]))
            c_keep = np.cumsum(np.concatenate([[0], keeps]))
            idx = np.arange(h, h + len(values)) + 1
            lo = np.maximum(idx - n, 0)
            count_up = (c_up[idx] - c_up[lo]).tolist()
            count_keep = (c_keep[idx] - c_keep[lo]).tolist()
            tail = max(0, len(ups) - (n - 1))
            self._hist_raise = ups[tail:].tolist()
            self._hist_clear = keeps[tail:].tolist()

        active, on = self.active, self._on
        min_windows = rule.min_windows
        runs: list[tuple[int, int]] = []  # [lo, hi) of windows with the alarm on, in this batch
        run_lo = 0 if active else -1
        for i in range(len(values)):
            if not active:
                if count_up[i] >= k:
                    active, on, run_lo = True, 1, i
            elif on >= min_windows and count_keep[i] < k:
                active = False
                runs.append((run_lo, i))
                run_lo = -1
            else:
                on += 1
        if active:
            runs.append((run_lo, len(values)))
        for r_lo, r_hi in runs:
            alarm[r_lo:r_hi] = True
            self._account(r_lo, r_hi, times, values, contributions, events, closes=r_hi < len(values))
        self.active, self._on = active, on
        self._last_time = float(times[-1])

    def _counts_small(self, values: np.ndarray) -> tuple[list[int], list[int]]:
        """What the array path of :meth:`_run_stretch` computes (per window, how many of the
        last n reach each level; the history updated), for a few windows in plain Python: a
        daemon with many slow assets steps each asset's rule every poll with one or two windows,
        where a dozen numpy calls on tiny arrays cost far more than their work."""
        rule = self.rule
        n, raise_level, clear_level = rule.n, rule.raise_level, rule.clear_level
        ups = list(self._hist_raise)
        keeps = list(self._hist_clear)
        h = len(ups)
        for v in values.tolist():
            finite = math.isfinite(v)
            ups.append(int(finite and v >= raise_level))
            keeps.append(int(finite and v >= clear_level))
        count_up = [sum(ups[max(0, i - n) : i]) for i in range(h + 1, len(ups) + 1)]
        count_keep = [sum(keeps[max(0, i - n) : i]) for i in range(h + 1, len(keeps) + 1)]
        tail = max(0, len(ups) - (n - 1))
        self._hist_raise = ups[tail:]
        self._hist_clear = keeps[tail:]
        return count_up, count_keep

    def _account(
        self,
        lo: int,
        hi: int,
        times: np.ndarray,
        values: np.ndarray,
        contributions: np.ndarray,
        events: AlarmEvents,
        *,
        closes: bool,
    ) -> None:
        """Fold the alarmed windows [lo, hi) into the open episode (opening it if needed)."""
        if lo == hi:  # the alarm cleared at the first window of this batch
            if closes and self.episode is not None:
                self.episode.end_reason = "cleared"
                events.closed.append(self.episode)
                self.episode = None
            return
        part = np.where(np.isfinite(values[lo:hi]), values[lo:hi], -np.inf)
        at = int(np.argmax(part))
        block = np.asarray(contributions[lo:hi], dtype=np.float64)
        # nan_to_num costs ~10 numpy calls, paid per alarmed asset and poll: only when needed.
        summed = (block if np.isfinite(block).all() else np.nan_to_num(block, nan=0.0)).sum(axis=0)
        episode = self.episode
        if episode is None:
            episode = Episode(
                asset=self.asset,
                start=float(times[lo]),
                end=float(times[hi - 1]),
                peak=float(part[at]),
                peak_time=float(times[lo + at]),
                windows=0,
                contributions=np.zeros_like(summed),
            )
            self.episode = episode
            events.opened.append(episode)
        if part[at] > episode.peak:  # the earliest window of the highest score is the peak
            episode.peak, episode.peak_time = float(part[at]), float(times[lo + at])
        episode.end = float(times[hi - 1])
        episode.windows += hi - lo
        episode.contributions = episode.contributions + summed
        if closes:
            episode.end_reason = "cleared"
            events.closed.append(episode)
            self.episode = None


    # -- snapshots (the daemon keeps them across a restart: memae_ts/connectors/alarm_state.py) --

    def snapshot(self) -> dict[str, Any]:
        """Everything the next window's decision depends on, as a small JSON-able dict: the last
        n-1 windows' flags, on/off and the windows on, the open episode, and the rule it was
        made under (a state from another rule is refused by :meth:`restore`). Versioned."""
        episode = self.episode
        return {
            "v": SNAPSHOT_VERSION,
            "rule": dict(self._rule_config),
            "n_sensors": self.n_sensors,
            "raise": "".join(map(str, self._hist_raise)),  # "0110"
            "clear": "".join(map(str, self._hist_clear)),
            "active": self.active,
            "on": self._on,
            # The end of the last window stepped: whether a window after a restart continues
            # its stretch (memae_ts/connectors/alarm_state.py); not part of any decision here.
            "last_time": _enc(self._last_time),
            "episode": None
            if episode is None
            else {
                "start": _enc(episode.start),
                "end": _enc(episode.end),
                "peak": _enc(episode.peak),
                "peak_time": _enc(episode.peak_time),
                "windows": episode.windows,
                "contributions": [_enc(x) for x in np.asarray(episode.contributions, np.float64).tolist()],
            },
        }

    def signature(self) -> tuple[Any, ...]:
        """Cheap to compute, equal when :meth:`snapshot` would be equal but for ``last_time``:
        lets the daemon skip the snapshot of an asset whose state did not change (a quiet one)."""
        e = self.episode
        return (
            self.active, self._on, tuple(self._hist_raise), tuple(self._hist_clear),
            None if e is None else (e.windows, e.peak, e.start),
        )  # fmt: skip

    def restore(self, data: Any) -> None:
        """Take over a :meth:`snapshot`. Raises :class:`AlarmStateError` (and leaves this state
        as it was) for another format version, another rule or sensor count, or a malformed one."""
        try:
            if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
                version = data.get("v") if isinstance(data, dict) else type(data).__name__
                raise AlarmStateError("version", f"snapshot format {version!r}, expected {SNAPSHOT_VERSION}")
            if AlarmRule.from_config(data["rule"]) != self.rule:
                raise AlarmStateError("rule", f"made under another alarm rule ({data['rule']})")
            if int(data["n_sensors"]) != self.n_sensors:
                detail = f"{data['n_sensors']} sensors, the model has {self.n_sensors}"
                raise AlarmStateError("sensors", detail)
            hist_raise = _flags(data["raise"], self.rule.n - 1)
            hist_clear = _flags(data["clear"], self.rule.n - 1)
            if len(hist_raise) != len(hist_clear):
                raise ValueError("raise and clear histories differ in length")
            active, on = data["active"], int(data["on"])
            last_time = None if data.get("last_time") is None else _dec(data["last_time"])
            if not isinstance(active, bool) or on < 0 or (active and on == 0):
                raise ValueError(f"inconsistent on/off: active={active!r}, on={on}")
            raw = data["episode"]
            episode = None
            if raw is not None:
                contributions = np.array([_dec(x) for x in raw["contributions"]], dtype=np.float64)
                if contributions.shape != (self.n_sensors,):
                    raise ValueError(f"{contributions.size} contributions for {self.n_sensors} sensors")
                episode = Episode(
                    asset=self.asset,
                    start=_dec(raw["start"]),
                    end=_dec(raw["end"]),
                    peak=_dec(raw["peak"]),
                    peak_time=_dec(raw["peak_time"]),
                    windows=int(raw["windows"]),
                    contributions=contributions,
                )
            if (episode is not None) != active:
                raise ValueError("an open episode without the alarm on, or the other way round")
        except AlarmStateError:
            raise
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise AlarmStateError("malformed", f"{type(exc).__name__}: {exc}") from None
        self._hist_raise, self._hist_clear = hist_raise, hist_clear
        self.active, self._on, self.episode, self._last_time = active, on, episode, last_time


SNAPSHOT_VERSION = 1


class AlarmStateError(ValueError):
    """A snapshot that cannot be taken over; ``reason`` (version, rule, sensors, malformed) is
    the label it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _enc(x: float | None) -> float | str | None:
    """A float JSON keeps exactly (orjson and json write the shortest round-trip repr); the
    non-finite ones, which JSON has no number for, as strings float() reads back."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _dec(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise ValueError(f"not a number: {x!r}")
    return float(x)


def _flags(text: Any, most: int) -> list[int]:
    if not isinstance(text, str) or len(text) > most or set(text) - {"0", "1"}:
        raise ValueError(f"window flags must be up to {most} of 0/1, got {text!r}")
    return [int(c == "1") for c in text]


class AlarmTracker:
    """One :class:`AlarmState` per asset (what the daemon keeps, and offline scoring uses)."""

    def __init__(self, rule: AlarmRule, n_sensors: int) -> None:
        self.rule = rule.validate()
        self.n_sensors = n_sensors
        self.states: dict[str, AlarmState] = {}

    def state(self, asset: str) -> AlarmState:
        state = self.states.get(asset)
        if state is None:
            state = self.states[asset] = AlarmState(self.rule, asset, self.n_sensors)
        return state

    def forget(self, assets: list[str]) -> None:
        """Drop assets another daemon now owns: their state is rebuilt there from empty."""
        for asset in assets:
            self.states.pop(asset, None)

    def open_episodes(self) -> list[Episode]:
        return [s.episode for s in self.states.values() if s.episode is not None]


def apply_rule(
    normalised: np.ndarray,
    rule: AlarmRule | None = None,
    *,
    new_stretch: np.ndarray | None = None,
    times: np.ndarray | None = None,
    contributions: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Episode]]:
    """The alarm rule over one file's (one asset's) scores, in time order: the alarm flag per
    element and the episodes (the last one with ``end_reason='open'`` if still on).

    ``normalised`` may hold NaN for rows without a score (warm-up): a non-finite row never
    alarms, is left out of the windows the rule counts (as in `score`, ``apply_alarms``), and
    such a run starts a new stretch after it (windows are cut inside stretches, so a run of
    unscored rows is a gap). ``times`` default to element positions; with ``contributions``
    (elements x sensors) the episodes name their top sensors. This is what bench/skab.py needs
    for a row-score array per file, and what the plot applies to scores built by hand.
    """
    rule = (rule or AlarmRule()).validate()
    values = np.asarray(normalised, dtype=np.float64)
    scored = np.flatnonzero(np.isfinite(values))
    alarm = np.zeros(values.size, dtype=bool)
    if scored.size == 0:
        return alarm, []
    stretch = np.zeros(scored.size, dtype=bool)
    stretch[0] = True
    stretch[1:] = np.diff(scored) > 1
    if new_stretch is not None:
        stretch |= np.asarray(new_stretch, dtype=bool)[scored]
    t = np.arange(values.size, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    state = AlarmState(rule, n_sensors=0 if contributions is None else contributions.shape[1])
    events = state.run(
        t[scored], values[scored], None if contributions is None else contributions[scored], stretch
    )
    alarm[scored] = events.alarm
    return alarm, events.closed + ([state.episode] if state.episode is not None else [])


def apply_alarms(data: Any, result: Any, rule: AlarmRule) -> None:
    """The rule over a scored SensorData, asset by asset (memae_ts.detection.scoring.RowScores gets its
    ``alarm`` per row and ``episodes``). Times are epoch seconds, or row numbers without a time
    column. Rows without a score never alarm and are not windows the rule counts."""
    from memae_ts.io.data import asset_rows

    n = len(result.score)
    alarm = np.zeros(n, dtype=bool)
    episodes: list[Episode] = []
    if data.timestamps is not None:
        times = data.timestamps.as_unit("ns").asi8 / 1e9
    else:
        times = np.asarray(data.row_numbers, dtype=np.float64)
    stretch = result.stretch_start
    # The level the rule watches: the normalised score, or with a bundle whose modes combine
    # "max", the larger of it and the novelty score (memae_ts.detection.scoring.RowScores.alarm_level).
    level = np.asarray(getattr(result, "alarm_level", result.normalised), dtype=np.float64)
    for rows in asset_rows(data):
        rows = rows[np.isfinite(result.score[rows])]
        if rows.size == 0:
            continue
        asset = "" if data.assets is None else str(data.assets[rows[0]])
        state = AlarmState(rule, asset, result.contributions.shape[1])
        starts = None if stretch is None else stretch[rows]
        events = state.run(times[rows], level[rows], result.contributions[rows], starts)
        alarm[rows] = events.alarm
        episodes.extend(events.closed)
        if state.episode is not None:
            episodes.append(state.episode)
    episodes.sort(key=lambda e: (e.start, e.asset))
    result.alarm = alarm
    result.episodes = episodes


EPISODE_COLUMNS = (
    "asset", "start", "end", "duration_seconds", "windows", "peak", "peak_time", "top_sensors", "end_reason",
)  # fmt: skip


def format_time(seconds: float, has_time: bool) -> Any:
    """ISO 8601 UTC as `memae-ts score` writes times, or the row number without a time column."""
    if not has_time:
        return int(seconds)
    stamp = np.datetime64(round(seconds * 1e6), "us")
    text = str(stamp)
    return (text[:-7] if text.endswith(".000000") else text) + "Z"


def episodes_frame(episodes: list[Episode], sensors: list[str], has_time: bool, top: int = 3) -> Any:
    """The table `memae-ts score --episodes` writes and `MemAE.episodes` returns, one row per
    episode: times as in the scores table, the peak normalised score, the top sensors as
    ``name:share;...`` of the error summed over the episode, and why it ended."""
    import pandas as pd

    rows = [
        {
            "asset": e.asset,
            "start": format_time(e.start, has_time),
            "end": format_time(e.end, has_time),
            "duration_seconds": (e.end - e.start) if has_time else np.nan,
            "windows": e.windows,
            "peak": e.peak,
            "peak_time": format_time(e.peak_time, has_time),
            "top_sensors": ";".join(f"{name}:{share:.2f}" for name, share in e.top_sensors(sensors, top)),
            "end_reason": e.end_reason,
        }
        for e in episodes
    ]
    frame = pd.DataFrame(rows, columns=list(EPISODE_COLUMNS))
    if not has_time:
        frame = frame.rename(columns={"start": "start_row", "end": "end_row", "peak_time": "peak_row"})
        frame = frame.drop(columns=["duration_seconds"])
    return frame
