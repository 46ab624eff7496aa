"""Several models in one daemon, and the drift metrics, at the processor level.

The Kafka client is replaced here (as in test_edge_processor.py) only to drive a rewind and a
reload at an exact point; the same behaviour runs against the real broker in
test_edge_fleet_kafka.py. Readings are messy on purpose: several assets per model interleaved,
a missing value, an unknown asset, a broken message.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from memae_ts.connectors.drift import RELATIVE_ERROR, RollingQuantile, TrainingRange
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ModelRoute, ServedModel, StreamProcessor
from memae_ts.edge.config import ConfigError, EdgeConfig
from processor_fakes import Msg, ScriptedPolls
from prometheus_client import CollectorRegistry
from test_edge_processor import FakeSink

from memae_ts.training.training_range import sensor_range_config


class SumEngine:
    """Score = mean of the window (plumbing, not modelling), times a factor per model."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contrib = windows.mean(axis=1) * self.factor
        return contrib.mean(axis=1), contrib


@dataclass
class RewindingSource(ScriptedPolls):
    """A source that, like KafkaSource, calls ``on_rewound`` for each partition it rewinds and
    marks the re-read offsets as history."""

    on_rewound: object
    batches: list[list[Msg]] = field(default_factory=list)
    commits: list[dict[int, int]] = field(default_factory=list)
    rebuild_points: list[dict[int, int]] = field(default_factory=list)
    assigned: set[int] = field(default_factory=lambda: {0})
    replay_until: dict[int, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.array(
            [o < self.replay_until.get(p, -1) for p, o in zip(partitions, offsets, strict=True)], dtype=bool
        )

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        self.commits.append(dict(next_offsets))
        self.rebuild_points.append(dict(rebuild_from))
        return True

    def rewind(self, partitions: set[int]) -> None:
        for p in partitions:
            committed = self.commits[-1][p]
            self.replay_until[p] = committed
            self.on_rewound(p, committed, self.rebuild_points[-1].get(p, committed), committed)  # type: ignore[operator]


def msg(offset: int, asset: str, t: int, values: list[float | None]) -> Msg:
    return Msg(0, offset, asset.encode(), json.dumps([t, *values]).encode())


def model(name: str, sensors: list[str], window: int, factor: float = 1.0, **kw: object) -> ServedModel:
    return ServedModel(SumEngine(factor), sensors, window, threshold=1.0, version=f"{name}-v1", **kw)  # type: ignore[arg-type]


def fleet(routes: list[ModelRoute]) -> tuple[StreamProcessor, RewindingSource, FakeSink, CollectorRegistry]:
    sink = FakeSink([])
    holder: dict[str, RewindingSource] = {}

    def factory(on_revoked, on_assigned, on_rewound):  # type: ignore[no-untyped-def]
        holder["s"] = RewindingSource(on_rewound)
        return holder["s"]

    reg = CollectorRegistry()
    proc = StreamProcessor(factory, sink, routes, EdgeMetrics(reg))  # type: ignore[arg-type]
    return proc, holder["s"], sink, reg


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_each_asset_is_scored_by_its_own_model_and_unserved_assets_are_dead_letters():
    proc, source, sink, reg = fleet(
        [
            ModelRoute("pumps", ("pump-*",), model("pumps", ["p", "q"], 2, factor=1.0)),
            ModelRoute("fans", ("fan-1", "fan-2"), model("fans", ["rpm"], 3, factor=10.0)),
        ]
    )
    source.batches = [
        [
            msg(0, "pump-1", 0, [1.0, 3.0]),
            msg(1, "fan-1", 0, [1.0]),
            msg(2, "pump-2", 0, [5.0, 5.0]),
            msg(3, "fan-1", 60, [2.0]),
            msg(4, "pump-1", 60, [1.0, None]),  # missing value: filled? no (max_fill_rows 0)
            msg(5, "boiler-9", 0, [1.0]),  # no model serves it
            msg(6, "pump-1", 120, [3.0, 3.0]),
            msg(7, "fan-1", 120, [3.0]),
            Msg(0, 8, b"pump-2", b"{not json"),
            msg(9, "pump-2", 60, [5.0, 7.0]),
        ]
    ]
    proc.step()
    got = {(r["asset"], r["ts"]): r for r in sink.published}
    # pump-1: window 2 broken by the missing value at 60 s; scores at 120 s need 60 s: none.
    assert set(got) == {("pump-2", "1970-01-01T00:01:00Z"), ("fan-1", "1970-01-01T00:02:00Z")}
    assert got["fan-1", "1970-01-01T00:02:00Z"]["score"] == pytest.approx(20.0)  # mean(1,2,3) x 10
    assert got["fan-1", "1970-01-01T00:02:00Z"]["model"] == "fans"
    assert got["fan-1", "1970-01-01T00:02:00Z"]["model_version"] == "fans-v1"
    assert got["pump-2", "1970-01-01T00:01:00Z"]["score"] == pytest.approx(5.5)
    assert got["pump-2", "1970-01-01T00:01:00Z"]["model"] == "pumps"
    assert sink.dead == ["no_model", "bad_json"]
    assert sample(reg, "memae_ts_invalid_messages_total", reason="no_model") == 1
    assert source.commits == [{0: 10}]
    assert sample(reg, "memae_ts_model_info", model="fans", version="fans-v1", sensors="rpm", window="3",
                  engine="unknown") == 1  # fmt: skip
    assert sample(reg, "memae_ts_asset_readings_total", asset="fan-1", model="fans") == 3
    assert sample(reg, "memae_ts_asset_readings_total", asset="pump-1", model="pumps") == 3


def test_a_model_that_is_not_loaded_dead_letters_its_assets_and_the_others_go_on():
    proc, source, sink, reg = fleet(
        [
            ModelRoute("pumps", ("pump-*",), model("pumps", ["p", "q"], 2)),
            ModelRoute("fans", ("fan-*",), None, "OSError('no such bundle')"),
        ]
    )
    source.batches = [
        [msg(0, "fan-1", 0, [1.0]), msg(1, "pump-1", 0, [1.0, 1.0]), msg(2, "pump-1", 60, [2.0, 2.0])]
    ]
    proc.step()
    assert [r["asset"] for r in sink.published] == ["pump-1"]
    assert sink.dead == ["model_unavailable"]
    assert sample(reg, "memae_ts_model_up", model="fans") == 0
    assert sample(reg, "memae_ts_model_up", model="pumps") == 1
    assert source.commits == [{0: 3}]  # the dead letter is committed: held would stall pump-1

    # A later reload brings it in; its assets are scored from then on (a fresh warm-up).
    proc.swap_model(model("fans", ["rpm"], 2), "fans")
    source.batches = [[msg(3, "fan-1", 60, [1.0]), msg(4, "fan-1", 120, [3.0])]]
    proc.step()
    assert [(r["asset"], r["score"]) for r in sink.published[1:]] == [("fan-1", pytest.approx(2.0))]
    assert sample(reg, "memae_ts_model_up", model="fans") == 1


def test_reloading_one_model_with_new_windowing_rebuilds_only_its_buffers():
    """The reloaded model re-reads history to rebuild its windows; the other model keeps its
    buffers and neither skips nor repeats a score."""
    proc, source, sink, _ = fleet(
        [
            ModelRoute("pumps", ("pump-*",), model("pumps", ["p"], 3)),
            ModelRoute("fans", ("fan-*",), model("fans", ["rpm"], 3)),
        ]
    )
    first = [msg(2 * i, "pump-1", 60 * i, [float(i)]) for i in range(4)]
    first += [msg(2 * i + 1, "fan-1", 60 * i, [float(10 + i)]) for i in range(4)]
    first.sort(key=lambda m: m.offset)
    source.batches = [first]
    proc.step()
    assert len(sink.published) == 4  # two windows of 3 each
    assert source.rebuild_points[-1] == {0: 4}  # both keep their last 2 rows: offsets 4..7

    # pumps: window 3 -> 2 (other windowing: rebuilt). fans: untouched.
    proc.swap_model(model("pumps", ["p"], 2, factor=100.0), "pumps")
    assert source.replay_until == {0: 8}
    reread = [m for m in first if m.offset >= 4]
    more = [msg(8, "pump-1", 240, [4.0]), msg(9, "fan-1", 240, [14.0])]
    source.batches = [reread + more]
    proc.step()
    new = sink.published[4:]
    assert [(r["asset"], r["model_version"]) for r in new] == [("pump-1", "pumps-v1"), ("fan-1", "fans-v1")]
    assert new[0]["score"] == pytest.approx(100 * (3.0 + 4.0) / 2)  # rebuilt from history rows
    assert new[1]["score"] == pytest.approx((12.0 + 13.0 + 14.0) / 3)  # fans: no row twice
    assert source.commits[-1] == {0: 10}


def test_a_reload_with_the_same_windowing_keeps_every_buffer():
    proc, source, sink, _ = fleet(
        [
            ModelRoute("pumps", ("pump-*",), model("pumps", ["p"], 2)),
            ModelRoute("fans", ("fan-*",), model("fans", ["rpm"], 2)),
        ]
    )
    source.batches = [[msg(0, "pump-1", 0, [1.0]), msg(1, "fan-1", 0, [1.0])]]
    proc.step()
    replacement = model("fans", ["rpm"], 2, factor=2.0)
    replacement.version = "fans-v2"
    proc.swap_model(replacement, "fans")
    assert source.replay_until == {}  # no rewind
    source.batches = [[msg(2, "pump-1", 60, [3.0]), msg(3, "fan-1", 60, [3.0])]]
    proc.step()
    assert [(r["asset"], r["model_version"], r["score"]) for r in sink.published] == [
        ("pump-1", "pumps-v1", pytest.approx(2.0)),
        ("fan-1", "fans-v2", pytest.approx(4.0)),
    ]


def test_out_of_range_readings_are_counted_per_asset_and_sensor():
    training = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 20.0]])
    config = {"training": {"sensor_range": sensor_range_config(training)}}
    rng = TrainingRange.from_config(config, ["p", "t"])
    assert rng is not None
    assert TrainingRange.from_config({"training": {}}, ["p", "t"]) is None  # an old bundle
    assert TrainingRange.from_config(config, ["p"]) is None  # does not fit the sensors
    pumps = model("pumps", ["p", "t"], 2, training_range=rng)
    proc, source, _, reg = fleet([ModelRoute("pumps", ("pump-*",), pumps)])
    source.batches = [
        [
            msg(0, "pump-1", 0, [0.5, 15.0]),  # p below
            msg(1, "pump-1", 60, [3.0, 20.0]),  # at the edges: inside
            msg(2, "pump-1", 120, [None, 25.0]),  # p missing (not counted), t above
            msg(3, "pump-2", 0, [2.0, 15.0]),
        ]
    ]
    proc.step()
    s = {(a, x): sample(reg, "memae_ts_out_of_range_readings_total", asset=a, model="pumps", sensor=x)
         for a in ("pump-1", "pump-2") for x in ("p", "t")}  # fmt: skip
    assert s == {("pump-1", "p"): 1, ("pump-1", "t"): 1, ("pump-2", "p"): 0, ("pump-2", "t"): 0}
    assert sample(reg, "memae_ts_asset_readings_total", asset="pump-1", model="pumps") == 3
    assert sample(reg, "memae_ts_asset_last_reading_timestamp_seconds", asset="pump-1", model="pumps") == 120
    assert sample(reg, "memae_ts_training_range_known", model="pumps") == 1


def test_an_old_bundle_reports_its_range_unknown_and_counts_nothing():
    proc, source, _, reg = fleet([ModelRoute("old", (), model("old", ["p"], 2))])
    source.batches = [[msg(0, "pump-1", 0, [1e9])]]
    proc.step()
    assert sample(reg, "memae_ts_training_range_known", model="old") == 0
    labels = {"asset": "pump-1", "model": "old", "sensor": "p"}
    assert sample(reg, "memae_ts_out_of_range_readings_total", **labels) is None


def test_rolling_p95_matches_the_exact_quantile_of_the_last_hour():
    rng = np.random.default_rng(7)
    q = RollingQuantile()
    # Three hours of 10 s readings, scores drifting up; fed in uneven chunks, one out of order.
    ts = np.arange(0, 3 * 3600, 10.0)
    scores = rng.lognormal(mean=np.log(0.3) + ts / 3 / 3600, sigma=0.5)
    cuts = [0, 17, 500, 501, 900, len(ts)]
    for a, b in itertools.pairwise(cuts):
        q.add(ts[a:b][::-1], scores[a:b][::-1])
    newest_slot = int(ts[-1] // 300)
    in_hour = ts // 300 > newest_slot - 12
    exact = np.quantile(scores[in_hour], 0.95, method="inverted_cdf")
    got = q.quantile(0.95)
    assert got is not None
    assert abs(got / exact - 1) <= RELATIVE_ERROR + 1e-12, (got, exact)
    # Readings older than the hour do not count; NaN and infinite scores are skipped.
    q.add(np.array([0.0, ts[-1], ts[-1]]), np.array([1e6, np.nan, np.inf]))
    assert q.quantile(0.95) == got
    assert RollingQuantile().quantile() is None


def test_model_sections_parse_and_overlapping_assets_are_refused(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(
        '[[model]]\nname = "pumps"\npath = "/m/pumps"\nassets = ["pump-*"]\n'
        '[[model]]\nname = "fans"\npath = "/m/fans"\nassets = ["fan-[0-4]", "blower"]\nthreads = 2\n'
    )
    cfg = EdgeConfig.load(path, {})
    assert [(m.name, m.path, m.assets, m.threads) for m in cfg.models] == [
        ("pumps", "/m/pumps", ["pump-*"], 1),
        ("fans", "/m/fans", ["fan-[0-4]", "blower"], 2),
    ]
    single = tmp_path / "single.toml"
    single.write_text('[model]\npath = "/m/one"\n')
    models = EdgeConfig.load(single, {}).models
    assert [(m.name, m.path, m.assets) for m in models] == [("default", "/m/one", [])]

    def refused(text: str, env: dict[str, str] | None = None) -> str:
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            EdgeConfig.load(path, env or {})
        return str(err.value)

    two = (
        '[[model]]\nname = "a"\npath = "/a"\nassets = ["%s"]\n'
        '[[model]]\nname = "b"\npath = "/b"\nassets = ["%s"]\n'
    )
    msg = refused(two % ("pump-*", "*-7"))
    assert "'pump-7'" in msg and "model 'a'" in msg and "model 'b'" in msg and "'*-7'" in msg
    assert "'pump-3'" in refused(two % ("pump-[0-4]", "pump-3"))
    EdgeConfig.load(path.write_text(two % ("pump-[0-4]", "pump-[5-9]")) and path, {})  # disjoint: fine
    EdgeConfig.load(path.write_text(two % ("line1/*", "line2/*")) and path, {})
    assert "two [[model]] sections have this name" in refused(two.replace('"b"', '"a"') % ("x", "y"))
    assert "assets is empty" in refused(two.replace('assets = ["%s"]\n', "", 1) % ("y",))
    assert "path is required" in refused('[[model]]\nname = "a"\n')
    assert "unknown key model.bogus" in refused('[[model]]\nname = "a"\npath = "/a"\nbogus = 1\n')
    assert "MEMAE_TS_MODEL_PATH" in refused(two % ("x", "y"), {"MEMAE_TS_MODEL_PATH": "/z"})


def test_info_shows_the_training_range_or_says_it_is_unavailable():
    from memae_ts.cli.commands.info import range_lines

    stored = sensor_range_config(np.array([[1.0, np.nan]]))
    config = {"sensors": ["p", "t"], "training": {"sensor_range": stored}}
    assert range_lines(config) == ["  range          p 1..1, t -..- (training rows; edge drift metric)"]
    (old,) = range_lines({"sensors": ["p"], "training": {}})
    assert "unavailable" in old and "refit" in old


def test_assets_named_in_a_section_are_expected_so_one_that_never_sends_shows_silent():
    before = time.time()
    proc, source, _, reg = fleet(
        [ModelRoute("fans", ("fan-1", "blower-north", "fan-[2-3]"), model("fans", ["rpm"], 2))]
    )
    def last_seen(asset: str) -> float | None:
        return sample(reg, "memae_ts_asset_last_seen_timestamp_seconds", asset=asset, model="fans")

    seen = last_seen("blower-north")
    assert seen is not None and before <= seen <= time.time()
    assert last_seen("fan-[2-3]") is None  # a pattern names no asset
    source.batches = [[msg(0, "fan-1", 0, [1.0])]]
    proc.step()
    later = last_seen("fan-1")
    proc.swap_model(model("fans", ["rpm"], 3), "fans")  # a reload does not restart the clock
    assert last_seen("blower-north") == seen
    assert later is not None and later >= seen
