"""The edge daemon with ``[source] kind = "mqtt"`` against a real Mosquitto broker.

Each test starts its own broker (loopback, free port, generated config with persistence), runs
``memae-ts edge`` as a real process, publishes the demo plant CSV over MQTT and compares the
score records on the MQTT score topic with ``memae-ts score`` of the same rows.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from edge_process import EdgeProcess
from fixtures_mqtt import records
from kafka_service import REPO, make_ca_and_server_cert
from memae_ts.edge.replay import read_messages, sensors_of_bundle
from mqtt_service import MosquittoBroker, missing_reason
from test_alarms_edge import assert_episodes_equal, messy_two_machines, score_with_episodes
from test_edge_kafka import assert_matches_offline, metric, offline_scores, score_offline, wait_count

pytestmark = [pytest.mark.mqtt, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def daemons(tmp_path: Path, edge_data) -> Iterator[Callable[..., EdgeProcess]]:
    started: list[EdgeProcess] = []

    def make(name: str, broker: MosquittoBroker, **sections: dict[str, Any]) -> EdgeProcess:
        config: dict[str, dict[str, Any]] = {
            "source": {"kind": "mqtt"},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "client_id": "gateway-1",
                "topics": ["plant/+/+/telemetry"],
                "asset_level": 2,
                "score_topic": "out/scores/{asset}",
                "dead_letter_topic": "out/dead-letters",
            },
        }
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        proc = EdgeProcess(
            tmp_path / name, bootstrap="127.0.0.1:9", input_topic="-", output_topic="-",
            dead_letter_topic="-", group="-", model=edge_data.model, batch_size=50, config=config,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


def readings(csv: Path, asset: str = "asset-1", line: str = "line1") -> list[tuple[str, bytes]]:
    return [(f"plant/{line}/{asset}/telemetry", value) for _, value in read_messages(csv, asset=asset)]


# -- tests -----------------------------------------------------------------------------------


def test_readings_over_mqtt_are_scored_like_offline_and_malformed_ones_are_dead_letters(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    """Two assets on two lines (the asset from topic level 2), 3.1.1 and 5 both work the same;
    malformed messages are dead letters on the MQTT dead-letter topic, never an exit."""
    broker = broker_factory()
    frame = pd.read_csv(edge_data.csv).iloc[:300]
    sensors = sensors_of_bundle(edge_data.model)
    gappy = frame.copy()
    gappy.loc[40:41, sensors[0]] = np.nan  # forward-filled
    gappy = gappy.drop(index=range(150, 170))  # a 20-minute outage: a new series after it
    csv1, csv2 = tmp_path / "a1.csv", tmp_path / "a2.csv"
    frame.to_csv(csv1, index=False)
    gappy.to_csv(csv2, index=False)
    offline1, offline2 = score_offline(edge_data.model, csv1), score_offline(edge_data.model, csv2)
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    daemon = daemons("edge", broker, mqtt={"protocol": "3.1.1"}).start()

    full = dict.fromkeys(sensors, 1.0)
    bad = [
        ("plant/line1/asset-1/telemetry", b"{not json"),
        ("plant/line1/asset-1/telemetry", json.dumps({"ts": "yesterday", "values": full}).encode()),
        (
            "plant/line2/asset-2/telemetry",
            json.dumps({"ts": 1, "values": {**full, sensors[0]: "high"}}).encode(),
        ),
    ]
    one, two = readings(csv1), readings(csv2, asset="asset-2", line="line2")
    mixed = [m for pair in zip(one, two, strict=False) for m in pair] + one[len(two) :]
    publisher = clients(broker, "plc")
    publisher.publish(mixed[:100] + bad[:3] + mixed[100:])
    got = watcher.wait("out/scores/", len(offline1) + len(offline2))
    scores1 = [m for m in got if m[0] == "out/scores/asset-1"]
    scores2 = [m for m in got if m[0] == "out/scores/asset-2"]
    assert_matches_offline(records(scores1), offline1, asset="asset-1")
    assert_matches_offline(records(scores2), offline2, asset="asset-2")
    assert len(scores1) == len(offline1) and len(scores2) == len(offline2)  # no duplicates

    dead = [json.loads(p) for _, p in watcher.wait("out/dead-letters", 3, timeout=10)]
    assert sorted(d["reason"] for d in dead) == ["bad_json", "bad_timestamp", "non_numeric"]
    assert {d["source_topic"] for d in dead} == {
        "plant/line1/asset-1/telemetry",
        "plant/line2/asset-2/telemetry",
    }
    assert any(d["payload"] == "{not json" for d in dead)
    assert metric(daemon, "memae_ts_invalid_messages_total", reason="bad_json") == 1
    assert metric(daemon, "memae_ts_source_messages_total", source="mqtt") == len(mixed) + 3
    assert metric(daemon, "memae_ts_source_connected", source="mqtt") == 1
    assert metric(daemon, "memae_ts_broker_up") == 1
    assert daemon.get("/readyz")[0] == 200
    t0 = time.monotonic()
    assert daemon.stop(timeout=40) == 0
    assert time.monotonic() - t0 < 5, daemon.logs()[-3000:]


def tag_messages(frame: pd.DataFrame, sensors: list[str], asset: str, skip: set[tuple[int, str]]):
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        ts = row.timestamp
        for s in sensors:
            if (i, s) in skip:
                continue
            value = getattr(row, s)
            out.append((f"plant/line1/{asset}/{s}", json.dumps({"ts": ts, "value": value}).encode()))
    return out


def test_one_topic_per_tag_is_merged_by_timestamp_and_a_tag_that_never_comes_is_missing(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    """Tag form: readings assembled from one message per sensor; a tag that never arrives for a
    tick is a missing value (forward-filled within the model's limit, as offline) and counted;
    a tag arriving after its reading was closed is a dead letter; tags of sensors the model does
    not use are ignored."""
    broker = broker_factory()
    frame = pd.read_csv(edge_data.csv).iloc[:200]
    sensors = sensors_of_bundle(edge_data.model)
    skip = {(50, sensors[2]), (120, sensors[0])}  # these tags never arrive
    expected = frame.copy()
    for i, s in skip:
        expected.loc[i, s] = np.nan
    csv = tmp_path / "expected.csv"
    expected.to_csv(csv, index=False)
    offline = score_offline(edge_data.model, csv)
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    daemon = daemons(
        "edge", broker,
        mqtt={"payload": "tag", "topics": ["plant/+/+/+"], "asset_level": 2, "sensor_level": 3,
              "tag_wait_seconds": 1.0},
    ).start()  # fmt: skip
    tags = tag_messages(frame, sensors, "pump-9", skip)
    # Interleave one extra (unused) tag and shuffle tags within each tick a little.
    tags.insert(
        5, ("plant/line1/pump-9/door_open", json.dumps({"ts": frame.timestamp[0], "value": 1}).encode())
    )
    publisher = clients(broker, "plc")
    publisher.publish(tags)
    got = watcher.wait("out/scores/", len(offline), timeout=60)
    assert_matches_offline(records(got), offline, asset="pump-9")
    assert len(got) == len(offline)
    late = ("plant/line1/pump-9/" + sensors[1], json.dumps({"ts": frame.timestamp[3], "value": 1.0}).encode())
    publisher.publish([late])
    dead = [json.loads(p) for _, p in watcher.wait("out/dead-letters", 1, timeout=10)]
    assert [d["reason"] for d in dead] == ["time_backwards"]
    for _, s in skip:
        assert metric(daemon, "memae_ts_source_tags_missing_total", source="mqtt", sensor=s) >= 1
    assert metric(daemon, "memae_ts_source_late_values_total", source="mqtt") == 1
    assert daemon.stop() == 0


def test_sigkill_redelivery_and_broker_restart_lose_no_score(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    """QoS 1 on a persistent session plus the local journal: a daemon stopped dead (SIGSTOP,
    then SIGKILL) with readings delivered and not acknowledged gets them again (DUP) from the
    broker; its successor rebuilds the windows from the journal; a broker restart while
    readings flow costs nothing. Every offline score is there and equal; duplicates agree."""
    broker = broker_factory()
    offline = offline_scores(edge_data)
    messages = readings(edge_data.csv)
    state = tmp_path / "state"
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    first = daemons("edge-1", broker, source={"state_dir": str(state)}).start()
    publisher = clients(broker, "plc")
    publisher.publish(messages[:250], rate=200.0)
    assert len(watcher.wait("out/scores/", 150)) < len(offline)
    first.send(signal.SIGSTOP)  # readings keep arriving in its socket, unacknowledged
    publisher.publish(messages[250:400])
    time.sleep(0.5)
    first.kill()
    second = daemons("edge-2", broker, source={"state_dir": str(state)}).start()
    first_400 = int((offline.timestamp <= pd.read_csv(edge_data.csv).timestamp[399]).sum())
    scored_before_restart = len(watcher.wait("out/scores/", first_400, timeout=60))
    feed = threading.Thread(target=publisher.publish, args=(messages[400:], 100.0), daemon=True)
    feed.start()
    time.sleep(0.8)
    broker.restart()  # while readings flow
    feed.join(120)
    got = watcher.wait("out/scores/", len(offline), timeout=120)
    assert scored_before_restart < len(offline) - 100
    assert not feed.is_alive() and publisher.unacknowledged() == 0, (
        "the plant's publications were not all acknowledged"
    )
    scored = {json.loads(p)["ts"] for _, p in got}
    if len(scored) != len(offline):  # seen twice in CI (563 and 586 of 705), never here: say all
        expected = list(offline.timestamp)
        missing = [i for i, ts in enumerate(expected) if ts not in scored]
        pytest.fail(
            f"{len(scored)} of {len(offline)} scored; missing score indexes {missing[:5]}..{missing[-5:]} "
            f"({len(missing)}), scored before the restart {scored_before_restart}; watcher sessions "
            f"present {watcher.sessions_present}, publisher {publisher.sessions_present}; daemon: "
            + " | ".join(
                ln
                for ln in second.metrics().splitlines()
                if "_total" in ln and not ln.startswith("#") and not ln.endswith(" 0.0")
            )
            + " | daemon log: "
            + " | ".join(ln for ln in second.logs().splitlines() if "mqtt" in ln)[-3000:]
            + " | broker log: "
            + broker.log.read_text()[-3000:]
        )
    assert_matches_offline(records(got), offline)
    assert len(got) - len(offline) <= 60, "more duplicates than one batch and the broker's in flight"
    assert second.proc is not None and second.proc.poll() is None, second.logs()[-3000:]
    assert metric(second, "memae_ts_source_redeliveries_total", source="mqtt") > 0
    assert metric(second, "memae_ts_source_restored_readings_total", source="mqtt") > 0
    assert metric(second, "memae_ts_source_reconnects_total", source="mqtt") >= 1
    assert metric(second, "memae_ts_source_sessions_lost_total", source="mqtt") == 0
    assert watcher.messages("out/dead-letters") == []
    assert second.stop() == 0


def test_tls_with_a_private_ca_and_a_password_from_a_credential_file(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    ca, _ = make_ca_and_server_cert(tmp_path / "pki")
    pki = tmp_path / "pki"
    broker = broker_factory(
        tls=(ca, pki / "server.crt", pki / "server.key"), users={"edge": "s3cret", "plc": "plc"}
    )
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    tls = {
        "tls": True,
        "ca_file": str(ca),
        "host": "localhost",
        "username": "edge",
        "password_file": str(secret),
    }
    offline = offline_scores(edge_data, rows=120)
    watcher = clients(broker, "watcher", subscribe=("out/#",), ca=ca, user="plc", password="plc")
    daemon = daemons("edge", broker, mqtt=tls).start()
    clients(broker, "plc", ca=ca, user="plc", password="plc").publish(readings(edge_data.csv)[:120])
    got = watcher.wait("out/scores/", len(offline))
    assert_matches_offline(records(got), offline)
    # SIGUSR1: every thread's stack in the log, and the daemon goes on (docs/edge.md).
    daemon.send(signal.SIGUSR1)

    # The dump is written thread by thread, the current (main) thread last: wait for all of it
    # (CI once read it after the first threads only).
    def dumped(log: str) -> bool:
        return "Current thread" in log and "edge/daemon.py" in log and "paho" in log

    deadline = time.monotonic() + 10
    while not dumped(daemon.logs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    dump = daemon.logs()
    assert dumped(dump), dump[-3000:]
    assert daemon.get("/healthz")[0] == 200
    assert daemon.stop() == 0

    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    refused = daemons("refused", broker, mqtt={**tls, "password_file": str(wrong), "client_id": "g2"})
    other_ca, _ = make_ca_and_server_cert(tmp_path / "other")
    untrusted = daemons("untrusted", broker, mqtt={**tls, "ca_file": str(other_ca), "client_id": "g3"})
    for proc, words in ((refused, "refused"), (untrusted, "TLS")):
        t0 = time.monotonic()
        proc.start(wait_ready=False)
        assert proc.proc is not None
        assert proc.proc.wait(30) == 2, proc.logs()[-2000:]
        assert time.monotonic() - t0 < 25
        assert words in proc.logs()


@pytest.mark.kafka
def test_asset_from_the_message_and_scores_to_kafka_and_mqtt_alike(
    broker_factory, clients, kafka_broker, kafka_names, edge_data, tmp_path
):
    """``asset_from = "message"`` (one topic for every asset, the JSON ``asset`` field names it)
    and ``outputs = ["kafka", "mqtt"]``: the same score records, alarm episode records and dead
    letters reach both, byte for byte."""
    broker = broker_factory()
    episodes = kafka_names.output + ".episodes"
    for topic in (kafka_names.output, kafka_names.dead_letter, episodes):
        kafka_broker.create_topic(topic)
    offline = offline_scores(edge_data)  # the whole faulty day: two alarm episodes
    watcher = clients(broker, "watcher", subscribe=("out/#", "memae-ts/episodes/+"))
    daemon = EdgeProcess(
        tmp_path / "edge", bootstrap=kafka_broker.bootstrap, input_topic=kafka_names.input,
        output_topic=kafka_names.output, dead_letter_topic=kafka_names.dead_letter, group=kafka_names.group,
        model=edge_data.model, batch_size=50,
        config={
            "kafka": {"episodes_topic": episodes},
            "source": {"kind": "mqtt", "outputs": ["kafka", "mqtt"]},
            "mqtt": {"port": broker.port, "client_id": "gw", "topics": ["plant/readings"],
                     "asset_from": "message", "score_topic": "out/scores/{asset}",
                     "dead_letter_topic": "out/dead-letters"},
        },
    ).start()  # fmt: skip
    messages = [("plant/readings", v) for _, v in read_messages(edge_data.csv, asset="pump-4")]
    compact = b'["2026-11-01T00:00:00Z", 1, 2, 3, 4, 5, 6, 7, 8]'  # the array form names no asset
    clients(broker, "plc").publish([*messages[:20], ("plant/readings", compact), *messages[20:]])
    by_mqtt = watcher.wait("out/scores/pump-4", len(offline))
    by_kafka = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    assert_matches_offline(records(by_mqtt), offline, asset="pump-4")
    assert_matches_offline(by_kafka, offline, asset="pump-4")
    assert sorted(r.value for r in by_kafka) == sorted(p for _, p in by_mqtt)  # byte for byte
    # Episode records go out before the scores after them are acknowledged: all are in by now.
    mqtt_episodes = watcher.messages("memae-ts/episodes/pump-4")
    assert {json.loads(p)["event"] for _, p in mqtt_episodes} == {"opened", "closed"}
    kafka_episodes = wait_count(kafka_broker.bootstrap, episodes, len(mqtt_episodes))
    assert [r.value for r in kafka_episodes] == [p for _, p in mqtt_episodes]
    (dead,) = [json.loads(p) for _, p in watcher.wait("out/dead-letters", 1, timeout=10)]
    assert dead["reason"] == "bad_asset" and "asset_from" in dead["detail"]
    (kafka_dead,) = wait_count(kafka_broker.bootstrap, kafka_names.dead_letter, 1)
    assert kafka_dead.headers["reason"] == b"bad_asset" and kafka_dead.value == compact
    assert daemon.stop() == 0


def test_alarm_episodes_over_mqtt_equal_offline_episodes(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    """A plant without Kafka gets its alarm episodes: on two machines with a time gap and
    dropouts, the opened and closed records on the default MQTT episodes topic
    (``memae-ts/episodes/{asset}``) are those of `memae-ts score --episodes` of the same rows,
    sent QoS 1 and acknowledged with the scores."""
    broker = broker_factory()
    csv = tmp_path / "messy.csv"
    multi = messy_two_machines(edge_data.csv, csv)
    offline, offline_episodes = score_with_episodes(edge_data.model, csv, tmp_path)
    assert set(offline_episodes.asset) == {"pump-a", "pump-b"}, offline_episodes  # the faults alarm
    ended = [e for e in offline_episodes.itertuples() if e.end_reason != "open"]
    assert ended, offline_episodes

    watcher = clients(broker, "watcher", subscribe=("out/#", "memae-ts/episodes/+"))
    daemon = daemons("edge", broker).start()
    sensors = [c for c in multi.columns if c not in ("timestamp", "asset")]
    messages = [
        (f"plant/line1/{key.decode()}/telemetry", value)
        for key, value in read_messages(csv, asset_column="asset", sensors=sensors)
    ]
    clients(broker, "plc").publish(messages)
    assert len(watcher.wait("out/scores/", len(offline), timeout=90)) == len(offline)
    got = watcher.wait("memae-ts/episodes/", len(offline_episodes) + len(ended), timeout=30)
    bodies = [json.loads(p) for _, p in got]
    assert len(bodies) == len(offline_episodes) + len(ended)  # no duplicates either
    assert all(topic == f"memae-ts/episodes/{b['asset']}" for (topic, _), b in zip(got, bodies, strict=True))
    assert_episodes_equal(bodies, offline_episodes)
    assert "publishes no episode records" not in daemon.logs()
    assert daemon.stop() == 0


def test_a_changed_bundle_is_served_without_a_signal_and_a_half_copied_one_is_refused(
    broker_factory, daemons, clients, edge_data, tmp_path
):
    """``reload = "on-change"`` on two ``[[model]]`` sections, one bundle changed: a half-copied
    bundle (new config.json, weights cut short) is refused once — counted, logged once however
    often it is looked at — and the old model keeps serving; once the copy is complete the new
    bundle serves (its version on the metrics and score records) with no restart and no SIGHUP,
    no reading is lost or scored twice, and the other model is not reloaded."""
    from memae_ts.engines.bundle import encode_bundle, load_bundle

    broker = broker_factory()
    bundles = {name: tmp_path / f"model-{name}" for name in ("a", "b")}
    for path in bundles.values():
        shutil.copytree(edge_data.model, path)
    old_version = json.loads((bundles["a"] / "config.json").read_text())["model_id"]
    served = load_bundle(bundles["a"])
    config = json.loads(json.dumps(served.config))
    config["threshold"]["value"] = 2 * config["threshold"]["value"]  # a recalibration
    config_bytes, weights_bytes = encode_bundle(config, served.weights)
    new_version = json.loads(config_bytes)["model_id"]
    assert new_version != old_version
    offline = offline_scores(edge_data, rows=300)
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    daemon = daemons("edge", broker)
    text = daemon.config.read_text().replace(f'[model]\npath = "{edge_data.model}"\n', "")
    daemon.config.write_text(text + "".join(
        f'[[model]]\nname = "{name}"\npath = "{path}"\nassets = ["asset-{n}"]\n'
        'reload = "on-change"\nreload_check_seconds = 0.2\n'
        for n, (name, path) in enumerate(bundles.items(), start=1)
    ))  # fmt: skip
    daemon.start()
    publisher = clients(broker, "plc")
    one, two = readings(edge_data.csv)[:300], readings(edge_data.csv, asset="asset-2")[:300]

    def publish(lo: int, hi: int) -> None:
        publisher.publish([m for pair in zip(one[lo:hi], two[lo:hi], strict=True) for m in pair])
        n = len(offline_scores(edge_data, rows=hi))
        for asset in ("asset-1", "asset-2"):
            watcher.wait(f"out/scores/{asset}", n)

    def versions(asset: str) -> list[str]:
        return [json.loads(p)["model_version"] for _, p in watcher.messages(f"out/scores/{asset}")]

    def info_version(model: str) -> str:
        lines = daemon.metrics().splitlines()
        (line,) = [x for x in lines if x.startswith("memae_ts_model_info{") and f'model="{model}"' in x]
        return line.split('version="')[1].split('"')[0]

    def wait_metric(result: str, n: int) -> None:
        deadline = time.monotonic() + 20
        while metric(daemon, "memae_ts_model_reloads_total", result=result) < n:
            assert time.monotonic() < deadline, daemon.logs()[-3000:]
            time.sleep(0.1)

    publish(0, 100)
    (bundles["a"] / "config.json").write_bytes(config_bytes)
    (bundles["a"] / "model.safetensors").write_bytes(weights_bytes[: len(weights_bytes) // 2])
    wait_metric("error", 1)
    time.sleep(1.5)  # several more looks at the same broken bundle
    assert metric(daemon, "memae_ts_model_reloads_total", result="error") == 1
    refusals = [e for e in daemon.log_events() if e["msg"].startswith("model reload failed")]
    assert len(refusals) == 1 and refusals[0]["trigger"] == "bundle changed", refusals
    assert refusals[0]["model"] == "a"
    assert daemon.get("/readyz")[0] == 200 and info_version("a") == old_version
    publish(100, 200)
    second = len(offline_scores(edge_data, rows=200))
    assert set(versions("asset-1")) == {old_version}

    (bundles["a"] / "model.safetensors").write_bytes(weights_bytes)  # the copy completes
    wait_metric("ok", 1)
    assert info_version("a") == new_version and info_version("b") == old_version
    publish(200, 300)
    threshold = served.config["threshold"]["value"]
    for asset, switch in (("asset-1", second), ("asset-2", len(offline))):
        bodies = [json.loads(p) for _, p in watcher.messages(f"out/scores/{asset}")]
        assert [b["ts"] for b in bodies] == list(offline.timestamp), asset  # none lost, none twice
        assert versions(asset) == [old_version] * switch + [new_version] * (len(offline) - switch)
        for i, (body, row) in enumerate(zip(bodies, offline.itertuples(), strict=True)):
            assert body["score"] == pytest.approx(row.score, rel=1e-5, abs=1e-9)
            scale = threshold if i < switch else 2 * threshold
            assert body["normalised_score"] == pytest.approx(row.score / scale, rel=1e-5)
    assert metric(daemon, "memae_ts_model_reloads_total", result="error") == 1
    assert metric(daemon, "memae_ts_model_reloads_total", result="ok") == 1  # model b untouched
    assert daemon.stop() == 0


def test_bench_mqtt_source_smoke(edge_data):
    """bench/mqtt_source.py on a sliver: both sides take the whole backlog, the ratio is printed."""
    if missing_reason() is not None:
        pytest.skip(missing_reason())
    out = subprocess.run(
        [sys.executable, "bench/mqtt_source.py", "--assets", "2", "--days", "0.1", "--runs", "1",
         "--model", str(edge_data.model)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "288 readings (2 assets)" in out.stdout and "ratio daemon / bare" in out.stdout, out.stdout
