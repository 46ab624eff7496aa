"""[source], [mqtt] and [opcua] configuration, and the parts of the MQTT/OPC UA sources that take
decisions (tag merging, tick assembly, the restart journal), without a broker: fast. The
end-to-end tests against a real Mosquitto and OPC UA server are test_edge_mqtt.py and
test_edge_opcua.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from memae_ts.connectors.mqtt_source import TagMerger, message_digest
from memae_ts.connectors.opcua_source import TickAssembler
from memae_ts.connectors.sources import PARTITION, LocalSource, SourceMetrics
from memae_ts.edge.config import ConfigError, EdgeConfig
from prometheus_client import CollectorRegistry


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> EdgeConfig:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return EdgeConfig.load(path, env or {})


def test_a_config_without_source_reads_kafka_as_before(tmp_path):
    cfg = load(tmp_path, '[kafka]\nbrokers = ["k1:9092"]\n')
    assert cfg.source.kind == "kafka" and cfg.source.outputs == []


def test_opcua_nodes_per_asset_from_toml_and_mqtt_secrets_from_files(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = load(
        tmp_path,
        '[source]\nkind = "opcua"\noutputs = ["mqtt", "kafka"]\n'
        f'[mqtt]\npassword_file = "{secret}"\n'
        "[opcua]\nsampling_interval_ms = 250\n"
        '[opcua.nodes."pump-7"]\n"ns=2;s=P7.Pressure" = "Pressure"\n"ns=2;i=1001" = "Flow"\n',
        {"MEMAE_TS_MQTT_PORT": "8883"},
    )
    assert cfg.opcua.nodes == {"pump-7": {"ns=2;s=P7.Pressure": "Pressure", "ns=2;i=1001": "Flow"}}
    assert cfg.mqtt.password == "s3cret" and cfg.mqtt.port == 8883


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[source]\nkind = "modbus"\n', "source.kind"),
        ('[source]\nkind = "opcua"\n[opcua.nodes.a]\n"ns=2;i=1" = "x"\n', "source.outputs"),
        ('[source]\nkind = "opcua"\noutputs = ["mqtt"]\n', "opcua.nodes is empty"),
        ('[source]\nkind = "opcua"\noutputs = ["mqtt"]\n[opcua]\nnodes = {a = 3}\n', "opcua.nodes.a"),
        ('[source]\nkind = "mqtt"\noutputs = ["ftp"]\n', "source.outputs"),
        ('[source]\nkind = "mqtt"\n[mqtt]\nprotocol = "3"\n', "mqtt.protocol"),
        ('[source]\nkind = "mqtt"\n[mqtt]\nqos = 2\n', "mqtt.qos"),
        ('[source]\nkind = "mqtt"\n[mqtt]\npayload = "tag"\nasset_from = "message"\n', "asset_from"),
        ('[source]\nkind = "mqtt"\n[mqtt]\npassword = "a"\npassword_file = "/x"\n', "both set"),
    ],
)
def test_bad_source_settings_name_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load(tmp_path, text)


def metrics(kind: str = "mqtt") -> tuple[SourceMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return SourceMetrics(kind, registry), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_tags_merge_by_timestamp_missing_tags_are_counted_and_late_ones_refused():
    m, registry = metrics()
    emitted: list[tuple[str, float, dict[str, Any], list[Any]]] = []
    late: list[str] = []
    merger = TagMerger(
        ["a", "b", "c"], 0.2, m, lambda *args: emitted.append(args), lambda topic, raw, tok, d: late.append(d)
    )
    merger.add("p1", "a", 60.0, 1.0, "t1", "x/a", b"")
    merger.add("p2", "a", 60.0, 9.0, "u1", "y/a", b"")  # another asset, its own reading
    merger.add("p1", "b", 60.0, 2.0, "t2", "x/b", b"")
    merger.add("p1", "b", 60.0, 2.5, "t3", "x/b", b"")  # the later value wins
    merger.add("p1", "door", 60.0, 1.0, "t4", "x/door", b"")  # not a model sensor: passed on, parser ignores
    assert emitted == []
    merger.add("p1", "c", 60.0, None, "t5", "x/c", b"")  # null: a missing value, but it arrived
    assert emitted == [
        ("p1", 60.0, {"a": 1.0, "b": 2.5, "door": 1.0, "c": None}, ["t1", "t2", "t3", "t4", "t5"])
    ]
    # The next reading lacks "c"; a complete later one closes it, with c missing and counted.
    merger.add("p1", "a", 120.0, 1.1, "t6", "x/a", b"")
    merger.add("p1", "b", 120.0, 2.1, "t7", "x/b", b"")
    for s, v in (("a", 1.2), ("b", 2.2), ("c", 3.2)):
        merger.add("p1", s, 180.0, v, s, f"x/{s}", b"")
    assert [e[1] for e in emitted] == [60.0, 120.0, 180.0]
    assert emitted[1][2] == {"a": 1.1, "b": 2.1, "c": None}
    assert value(registry, "memae_ts_source_tags_missing_total", source="mqtt", sensor="c") == 1
    assert value(registry, "memae_ts_source_values_superseded_total", source="mqtt") == 1
    merger.add("p1", "c", 120.0, 3.1, "t8", "x/c", b"")  # its reading was scored already
    assert len(late) == 1 and value(registry, "memae_ts_source_late_values_total", source="mqtt") == 1
    # p2 never completes: closed by the wall-clock wait, every other tag missing.
    time.sleep(0.25)
    merger.expire()
    assert emitted[-1][:3] == ("p2", 60.0, {"a": 9.0, "b": None, "c": None})


def test_with_several_models_each_asset_waits_for_the_sensors_of_its_own_model():
    m, _ = metrics()
    emitted: list[Any] = []
    sensors = {"pump-1": ["a", "b"], "fan-1": ["rpm"]}
    merger = TagMerger(sensors.__getitem__, 5.0, m, lambda *args: emitted.append(args[:3]), None)
    merger.add("fan-1", "rpm", 60.0, 900.0, None, "f/rpm", b"")
    merger.add("pump-1", "a", 60.0, 1.0, None, "p/a", b"")
    assert emitted == [("fan-1", 60.0, {"rpm": 900.0})]


def test_opcua_ticks_hold_unchanged_values_and_a_bad_status_is_missing():
    m, registry = metrics("opcua")
    emitted: list[tuple[str, float, dict[str, Any]]] = []
    asm = TickAssembler({"p": ["a", "b"]}, 60.0, 0.2, m, lambda *args: emitted.append(args))
    asm.add("p", "a", 0.5, 1.0)
    asm.add("p", "b", 59.9, 2.0)  # same tick: complete
    asm.add("p", "a", 61.0, 1.5)
    asm.add("p", "a", 62.0, 1.6)  # two values in one tick: the later wins
    asm.add("p", "b", 125.0, None)  # Bad status in the next tick
    assert emitted[0] == ("p", 0.0, {"a": 1.0, "b": 2.0})
    time.sleep(0.25)
    asm.expire()
    # tick 60: b had no notification: held at 2.0; tick 120: a held, b Bad -> missing
    assert emitted[1:] == [("p", 60.0, {"a": 1.6, "b": 2.0}), ("p", 120.0, {"a": 1.6, "b": None})]
    asm.add("p", "a", 30.0, 9.0)  # a tick already scored
    assert value(registry, "memae_ts_source_late_values_total", source="opcua") == 1
    assert value(registry, "memae_ts_source_values_held_total", source="opcua") == 2
    assert value(registry, "memae_ts_source_values_superseded_total", source="opcua") == 1
    assert value(registry, "memae_ts_source_tags_missing_total", source="opcua", sensor="b") == 1


class _Recorder(LocalSource):
    """The base class under test with acknowledgements recorded (no broker behind it)."""

    kind = "mqtt"

    def __init__(self, state_dir: str) -> None:
        self.acked: list[Any] = []
        super().__init__(metrics()[0], batch_size=100, state_dir=state_dir, max_journal=1000)

    def _acknowledge(self, token: Any) -> None:
        self.acked.append(token)

    def _digests(self, token: Any) -> list[str]:
        return [token[1]]

    def _disconnect(self) -> None:
        pass


def test_the_journal_keeps_what_the_windows_need_and_the_next_daemon_reads_it_as_history(tmp_path):
    state = str(tmp_path / "state")
    first = _Recorder(state)
    for i in range(10):
        body = orjson.dumps({"ts": 60 * i, "values": {}})
        first.offer("plant/p1", b"p1", body, (i, message_digest("plant/p1", body)))
    records = first.poll(100)
    assert [r.offset for r in records] == list(range(10))
    assert not first.history_mask(np.zeros(10), np.arange(10)).any()
    # Scores of offsets 0..7 are out; the windows need offsets 5 and later.
    first.commit({PARTITION: 8}, {PARTITION: 5})
    assert [t[0] for t in first.acked] == list(range(8))
    assert first.seen_before(message_digest("plant/p1", orjson.dumps({"ts": 0, "values": {}})))

    second = _Recorder(state)  # a restart (the journal was written before the acknowledgements)
    rewound: list[tuple[int, int, int, int]] = []
    second.bind(lambda *args: rewound.append(args))
    history = second.poll(100)
    assert [orjson.loads(r.value)["ts"] for r in history] == [300, 360, 420, 480, 540]
    assert second.history_mask(np.zeros(5), np.array([r.offset for r in history])).all()
    assert rewound == [(PARTITION, 5, 0, 0)]
    assert second.seen_before(message_digest("plant/p1", orjson.dumps({"ts": 420, "values": {}})))
    body = orjson.dumps({"ts": 600, "values": {}})
    second.offer("plant/p1", b"p1", body, (10, message_digest("plant/p1", body)))
    (new,) = second.poll(100)
    assert new.offset == 5 and not second.history_mask(np.zeros(1), np.array([5])).any()


def test_without_state_dir_nothing_is_written_and_a_restart_warms_up(tmp_path, caplog):
    source = _Recorder("")
    source.offer("t", b"a", b"[1]", (0, "d0"))
    source.poll(100)
    source.commit({PARTITION: 1}, {PARTITION: 0})
    assert source.acked == [(0, "d0")] and list(tmp_path.iterdir()) == []
    assert "warms up again" in caplog.text
    assert _Recorder("").poll(10) == []


def test_a_model_with_other_windows_rebuilds_from_the_journal_and_a_broken_journal_warms_up(tmp_path, caplog):
    state = tmp_path / "state"
    source = _Recorder(str(state))
    rewound: list[tuple[int, int, int, int]] = []
    source.bind(lambda *args: rewound.append(args))
    for i in range(4):
        source.offer("t", b"a", orjson.dumps([60 * i, 1.0]), (i, f"d{i}"))
    assert len(source.poll(100)) == 4
    source.commit({PARTITION: 4}, {PARTITION: 2})
    source.rewind({PARTITION})  # what StreamProcessor.swap_model does for other windowing
    again = source.poll(100)
    assert [r.offset for r in again] == [2, 3] and source.history_mask(np.zeros(2), np.array([2, 3])).all()
    assert rewound == [(PARTITION, 4, 2, 2)]

    (state / "mqtt-journal.json").write_bytes(b"{half a file")
    broken = _Recorder(str(state))
    assert broken.poll(10) == [] and "source journal unreadable" in caplog.text
