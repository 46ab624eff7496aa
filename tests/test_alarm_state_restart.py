"""The alarm state kept across a crash, for what a real broker cannot produce on demand: a
crash after the state was written but before the offsets were committed (at-least-once), and
stored states that cannot be used. The store is an in-memory stand-in for the compacted state
topic (records in topic order, the latest per asset wins); the SIGKILL on the real broker is in
test_alarms_edge.py."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from memae_ts.connectors.alarm_state import AlarmStateMetrics, decode_record
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ServedModel, StreamProcessor
from memae_ts.connectors.sources import LocalSource, SourceMetrics
from prometheus_client import CollectorRegistry, generate_latest
from test_edge_processor import FakeSink, FakeSource, MeanEngine, Msg

from memae_ts.detection.alarms import AlarmStateError
from memae_ts.io.resample import ResampleSpec


class MemoryStore:
    """The state topic: what was produced stays, even when the offsets commit failed after."""

    exact = False

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    def write(self, records: list[tuple[str, bytes]]) -> None:
        self.records.extend(records)

    def read(self, partitions: set[int], metrics: Any) -> dict[str, dict[str, Any]]:
        found = {}
        for key, value in self.records:
            try:
                record = decode_record(value)
            except AlarmStateError as exc:
                metrics.unusable.labels(reason=exc.reason).inc()
                found.pop(key, None)
                continue
            except ValueError:
                metrics.unusable.labels(reason="unreadable").inc()
                found.pop(key, None)
                continue
            if record["partition"] in partitions:
                found[record["asset"]] = record
        return found


@dataclass
class EpisodeSink(FakeSink):
    episodes: list[tuple[str, str, str, int, str]] = field(default_factory=list)

    def publish_episodes(self, keys: list[bytes], values: list[bytes]) -> None:
        for v in values:
            b = json.loads(v)
            self.episodes.append((b["event"], b["episode_id"], b["end"], b["windows"], b["end_reason"]))


def stream() -> list[Msg]:
    """Two assets on two partitions, a minute apart, interleaved: a fault on each (a0 one that
    hovers around the threshold, a1 one cut by a 20-minute gap), quiet stretches around."""
    rng = np.random.default_rng(4)
    rows = []
    for p in (0, 1):
        t, off = 0, 0
        for i in range(90):
            t += 60 if not (p == 1 and i == 50) else 1200
            fault = 20 <= i < 60 if p == 0 else 35 <= i < 70
            v = (0.65 + rng.uniform(-0.08, 0.08)) if fault else rng.uniform(0.05, 0.3)
            rows.append((t, p, Msg(p, off, b"a%d" % p, json.dumps([t, v, 2 * v]).encode())))
            off += 1
    rows.sort(key=lambda r: (r[0], r[1]))
    return [m for _, _, m in rows]


def processor(
    source: FakeSource, sink: FakeSink, store: MemoryStore | None, max_gap: float | None = None,
    resample: ResampleSpec | None = None,
) -> StreamProcessor:  # fmt: skip
    model = ServedModel(
        MeanEngine(), ["x", "y"], 3, threshold=1.0, version="v1", max_gap_seconds=max_gap, resample=resample
    )
    proc = StreamProcessor(lambda *callbacks: source, sink, model, EdgeMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    proc.alarm_states.store = store  # type: ignore[assignment]
    return proc


@dataclass
class RebuildSource(FakeSource):
    """Keeps the rebuild points committed with the offsets (what the Kafka source stores)."""

    rebuild: dict[int, int] = field(default_factory=dict)

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        ok = super().commit(next_offsets, rebuild_from)
        if ok:
            self.rebuild.update({p: min(rebuild_from.get(p, off), off) for p, off in next_offsets.items()})
        return ok


def run(proc: StreamProcessor, source: FakeSource, batches: list[list[Msg]]) -> None:
    source.batches = list(batches)
    for _ in batches:
        proc.step()


def alarms(sink: FakeSink) -> dict[tuple[str, str], bool]:
    return {(r["asset"], r["ts"]): r["alarm"] for r in sink.published}


def crash_and_resume(
    store: MemoryStore | None, cut: int, batch: int = 7, msgs: list[Msg] | None = None,
    max_gap: float | None = None, resample: ResampleSpec | None = None,
):  # fmt: skip
    """A daemon that processes ``cut`` batches, the last commit failing (then it dies), and the
    next one reading each partition from its committed rebuild point, as the Kafka source does."""
    msgs = stream() if msgs is None else msgs
    batches = [msgs[i : i + batch] for i in range(0, len(msgs), batch)]
    log: list[str] = []
    first_src, first_sink = RebuildSource(log), EpisodeSink(log)
    first_src.commit_results = [True] * (cut - 1) + [False]  # the cut-th commit never happens
    first = processor(first_src, first_sink, store, max_gap, resample)
    run(first, first_src, batches[:cut])
    committed = {p: 0 for p in (0, 1)}
    for done in first_src.commits:
        committed.update(done)
    second_src, second_sink = RebuildSource(log), EpisodeSink(log)
    second_src.replay_until = dict(committed)
    second = processor(second_src, second_sink, store, max_gap, resample)
    for p in (0, 1):
        second._on_rewound(p, committed[p], first_src.rebuild.get(p, 0), first_src.rebuild.get(p, 0))
    rest = [m for m in msgs if m.offset >= first_src.rebuild.get(m.partition, 0)]
    run(second, second_src, [rest[i : i + batch] for i in range(0, len(rest), batch)])
    return first_sink, second_sink, second


def history(events: list[tuple]) -> list[tuple]:
    """Episode records without duplicates; an opened one by its id only (its length so far
    depends on where the batch ended)."""
    return sorted({e[:2] if e[0] == "opened" else e for e in events})


def reference(
    msgs: list[Msg] | None = None, max_gap: float | None = None, resample: ResampleSpec | None = None
) -> EpisodeSink:
    log: list[str] = []
    src, sink = FakeSource(log), EpisodeSink(log)
    msgs = stream() if msgs is None else msgs
    run(processor(src, sink, None, max_gap, resample), src, [msgs[i : i + 7] for i in range(0, len(msgs), 7)])
    return sink


@pytest.mark.parametrize("resample", [None, ResampleSpec(60.0, "hold", 600.0)])
def test_a_crash_between_state_write_and_commit_replays_the_same_alarms_and_episodes(resample) -> None:
    """The re-scored windows (duplicates by design) carry the alarm flags they had the first
    time, and the episodes opened or closed among them are sent again with the same id: the
    rule resumed from the state at the committed offset, not the newer one written before the
    crash. Together, with duplicates removed, it is the history of a daemon that ran through."""
    want = reference(resample=resample)
    want_alarms = alarms(want)
    assert any(want_alarms.values()) and want.episodes
    cuts_tried = continued = 0
    for cut in range(3, 24, 2):
        store = MemoryStore()
        first, second, proc = crash_and_resume(store, cut, resample=resample)
        got = {**alarms(first), **alarms(second)}
        assert got == want_alarms, cut
        rescored = alarms(first).keys() & alarms(second).keys()
        assert rescored  # the crash did cost duplicates
        assert all(alarms(first)[k] == alarms(second)[k] for k in rescored)
        assert history(first.episodes + second.episodes) == history(want.episodes), cut
        # episodes are never opened twice under two ids
        opened = [e[1] for e in first.episodes + second.episodes if e[0] == "opened"]
        assert sorted(set(opened)) == sorted(e[1] for e in want.episodes if e[0] == "opened")
        restored = proc.alarm_states.metrics.restored
        cuts_tried += restored.labels(result="rewound")._value.get() > 0
        continued += proc.alarm_states.metrics.continued._value.get()
    assert cuts_tried >= 3  # several cuts resumed from the state at the committed offset
    assert continued > 0  # rebuilt windows continued the stretch (no false gap)


def test_without_the_kept_state_the_restart_splits_an_episode() -> None:
    """The same crash with the state not kept (the behaviour before): some cut gives another
    history than the daemon that ran through (this is what the kept state fixes)."""
    want = reference()
    differs = 0
    for cut in range(3, 24, 2):
        first, second, _ = crash_and_resume(None, cut)
        differs += history(first.episodes + second.episodes) != history(want.episodes)
    assert differs > 0


def test_unusable_stored_states_are_counted_and_the_asset_starts_empty() -> None:
    """Another format version, junk and a state made under another alarm rule as the latest
    records: each counted by reason, the asset starts empty (an older usable record of it is
    not taken instead: it is stale), scoring goes on exactly as without any stored state."""
    store = MemoryStore()
    crash_and_resume(store, 11)  # real states of a0 and a1 first
    good = next(decode_record(v) for k, v in reversed(store.records) if k == "a0")
    assert any(k == "a1" for k, _ in store.records)
    other_rule = {**good, "state": {**good["state"], "rule": {**good["state"]["rule"], "k": 2}}}
    store.records += [("a0", orjson.dumps({**good, "v": 99})), ("a1", b"\x00not json"),
                      ("a0", orjson.dumps(other_rule))]  # fmt: skip

    def resumed(store: MemoryStore | None) -> tuple[StreamProcessor, EpisodeSink]:
        log: list[str] = []
        src, sink = FakeSource(log), EpisodeSink(log)
        src.replay_until = {0: 40, 1: 40}
        proc = processor(src, sink, store)
        for p in (0, 1):
            proc._on_rewound(p, 40, 0, 0)
        msgs = stream()
        run(proc, src, [msgs[i : i + 7] for i in range(0, len(msgs), 7)])
        return proc, sink

    proc, sink = resumed(store)
    unusable = proc.alarm_states.metrics.unusable
    assert {r: unusable.labels(reason=r)._value.get() for r in ("rule", "unreadable", "version")} == {
        "rule": 1, "unreadable": 1, "version": 1
    }
    assert proc.alarm_states.metrics.restored.labels(result="exact")._value.get() == 0
    _, empty = resumed(None)
    assert alarms(sink) == alarms(empty) and sink.episodes == empty.episodes
    assert any(alarms(sink).values())


class _Journal(LocalSource):
    """An MQTT-like local source without a broker behind it (acknowledgements dropped)."""

    kind = "mqtt"

    def __init__(self, state_dir: str) -> None:
        super().__init__(SourceMetrics("mqtt", CollectorRegistry()), batch_size=9, state_dir=state_dir)

    def _acknowledge(self, token: Any) -> None:
        pass

    def _disconnect(self) -> None:
        pass


def test_mqtt_and_opcua_sources_keep_the_alarm_state_in_the_state_dir_journal(tmp_path) -> None:
    """A local source's daemon restarted in the middle of a0's fault: the state comes back from
    the journal file (written with the messages, one rename) and the history is that of a daemon
    that ran through: no second episode, no gap."""
    msgs = stream()
    cut = next(i for i, m in enumerate(msgs) if m.key == b"a0" and json.loads(m.value)[0] == 55 * 60)

    def daemon(state_dir: str, part: list[Msg]) -> tuple[StreamProcessor, EpisodeSink]:
        source = _Journal(state_dir)
        sink = EpisodeSink([])

        def factory(on_revoked: Any, on_assigned: Any, on_rewound: Any) -> _Journal:
            source.bind(on_rewound)
            return source

        model = ServedModel(MeanEngine(), ["x", "y"], 3, threshold=1.0, version="v1")
        proc = StreamProcessor(factory, sink, model, EdgeMetrics(CollectorRegistry()))  # type: ignore[arg-type]
        for m in part:
            source.offer("plant", m.key, m.value, None)
        for _ in range(len(part) // 9 + 3):
            proc.step()
        return proc, sink

    want = reference()
    state = str(tmp_path / "state")
    _, first = daemon(state, msgs[:cut])  # then killed: no close
    assert any(e[0] == "opened" for e in first.episodes)
    proc, second = daemon(state, msgs[cut:])
    assert proc.alarm_states.metrics.restored.labels(result="exact")._value.get() == 2
    assert {**alarms(first), **alarms(second)} == alarms(want)
    # None twice, none split (an opened record's length depends on where the batch ended).
    got = first.episodes + second.episodes
    assert [e[:2] for e in got] == [e[:2] for e in want.episodes]
    assert [e for e in got if e[0] == "closed"] == [e for e in want.episodes if e[0] == "closed"]

    # The journal without the alarm state (as before): the fault becomes a second episode.
    _, fresh = daemon(state + "-fresh", msgs[:cut])
    journal = tmp_path / "state-fresh" / "mqtt-journal.json"
    journal.write_bytes(orjson.dumps({**orjson.loads(journal.read_bytes()), "alarm_state": {}}))
    _, warm = daemon(state + "-fresh", msgs[cut:])
    assert [e[:2] for e in fresh.episodes + warm.episodes] != [e[:2] for e in want.episodes]


@pytest.mark.prometheus
def test_alarm_state_series_start_at_zero_and_promtool_accepts_them(promtool_bin) -> None:
    registry = CollectorRegistry()
    metrics = AlarmStateMetrics(registry)
    for result in ("exact", "rewound", "ahead"):
        assert registry.get_sample_value("memae_ts_alarm_states_restored_total", {"result": result}) == 0
    for reason in ("unreadable", "version", "rule", "sensors", "malformed"):
        assert registry.get_sample_value("memae_ts_alarm_states_unusable_total", {"reason": reason}) == 0
    metrics.saved.inc(3)
    done = subprocess.run([str(promtool_bin), "check", "metrics"], input=generate_latest(registry),
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def test_a_real_gap_just_before_the_crash_still_closes_the_episode_as_a_gap() -> None:
    """a0 is in a fault episode, its data stops for an hour (beyond max_gap: a new series), two
    readings of the new series arrive (one short of a window) and the daemon dies. The first
    window after the restart starts a stretch for real, and the episode ends by the gap, as
    offline; the stretch-continues rule only applies to windows overlapping the last one."""
    rows = []
    t = 0
    for i in range(45):
        t += 3600 if i == 30 else 60
        v = 1.0 if i >= 10 else 0.2
        rows.append(Msg(0, i, b"a0", json.dumps([t, v, 2 * v]).encode()))
    want = reference(rows, max_gap=600)
    assert ("closed", "a0@1970-01-01T00:14:00Z", "1970-01-01T00:30:00Z", 17, "gap") in want.episodes
    for cut in (32, 33, 34):  # batches of one reading: the cut-th one's commit fails
        first, second, _ = crash_and_resume(MemoryStore(), cut, batch=1, msgs=rows, max_gap=600)
        assert history(first.episodes + second.episodes) == history(want.episodes), cut
        assert {**alarms(first), **alarms(second)} == alarms(want), cut
