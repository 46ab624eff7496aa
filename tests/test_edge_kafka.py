"""The edge daemon against a real Kafka broker (KRaft) and a real Prometheus.

Every test has its own topics and consumer group on the session's broker, runs ``memae-ts edge``
as a real process and checks the score topic against ``memae-ts score`` of the same CSV.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from edge_process import EdgeProcess, Record, read_topic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2
from kafka_service import REPO
from memae_ts.edge.replay import read_messages, replay

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


# -- helpers ---------------------------------------------------------------------------------


def offline_scores(edge_data, rows: int | None = None) -> pd.DataFrame:
    """`memae-ts score` output restricted to scored rows (of the first `rows` rows)."""
    frame = edge_data.offline if rows is None else edge_data.offline.iloc[:rows]
    return frame.dropna(subset=["score"]).reset_index(drop=True)


def by_ts(records: list[Record], asset: str | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        body = r.json()
        if asset is None or body["asset"] == asset:
            out.setdefault(body["ts"], []).append(body)
    return out


def assert_matches_offline(records: list[Record], offline: pd.DataFrame, asset: str = "asset-1") -> None:
    """Every offline score is in the topic (no gaps), with the same values, and nothing else."""
    live = by_ts(records, asset)
    assert set(live) == set(offline.timestamp), (
        f"missing {sorted(set(offline.timestamp) - set(live))[:5]}, "
        f"extra {sorted(set(live) - set(offline.timestamp))[:5]}"
    )
    for row in offline.itertuples():
        for rec in live[row.timestamp]:  # duplicates (at-least-once) must agree too
            assert rec["score"] == pytest.approx(row.score, rel=1e-5, abs=1e-9), row.timestamp
            assert rec["normalised_score"] == pytest.approx(row.normalised_score, rel=1e-5)
            if abs(row.normalised_score - 1.0) > 1e-4:
                assert rec["is_anomaly"] == bool(row.is_anomaly), row.timestamp
            offline_top = [part.split(":")[0] for part in row.top_sensors.split(";")]
            assert [t["sensor"] for t in rec["top_sensors"]][:2] == offline_top[:2], row.timestamp


Message = tuple[bytes | None, bytes | None]


def produce(bootstrap: str, topic: str, messages: list[Message], rate: float = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    try:
        replay(messages, producer, topic, rate=rate, flush_timeout=120)
    finally:
        producer.close()


def replay_in_background(bootstrap: str, topic: str, csv: Path, rate: float) -> subprocess.Popen[bytes]:
    """`memae-ts replay --rate` as its own process (a producer thread in the test process would
    compete with the test's consumers for the GIL and distort the timing)."""
    return subprocess.Popen(
        [sys.executable, "-m", "memae_ts.cli", "replay", str(csv), "--topic", topic, "--brokers", bootstrap,
         "--rate", str(rate)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def join_replay(proc: subprocess.Popen[bytes]) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def wait_count(bootstrap: str, topic: str, n: int, timeout: float = 60) -> list[Record]:
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    while time.monotonic() < deadline:
        records = read_topic(bootstrap, topic, n, timeout=min(15, max(0.5, deadline - time.monotonic())))
        if len(records) >= n:
            return records
    return records


def metric(daemon: EdgeProcess, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in daemon.metrics().splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name != name:
            continue
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text)
        got = ",".join(f'{k}="{v}"' for k, v in sorted(pairs))
        if got == want:
            return float(value)
    raise KeyError(f"{name}{labels} not exported")


def committed_all(bootstrap: str, topic: str, group: str) -> tuple[dict[int, int | None], dict[int, int]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        end = consumer.end_offsets(parts)
        return {tp.partition: consumer.committed(tp) for tp in parts}, {tp.partition: end[tp] for tp in parts}
    finally:
        consumer.close()


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_replayed_csv_is_scored_like_offline_and_reaches_prometheus(
    kafka_broker, kafka_names, edge_data, edge_daemons, prometheus_server
):
    kafka_broker.create_topic(kafka_names.input, partitions=2)
    daemon = edge_daemons().start()
    prometheus_server.set_targets([f"127.0.0.1:{daemon.port}"])
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "replay", str(edge_data.csv), "--topic", kafka_names.input,
         "--brokers", kafka_broker.bootstrap],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    offline = offline_scores(edge_data)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    assert len(records) == len(offline)  # no failure: exactly once
    assert_matches_offline(records, offline)
    assert {r.key for r in records} == {b"asset-1"}

    # Every injected fault of the demo data is flagged; normal operation almost never is.
    flagged = np.array([by_ts(records)[ts][0]["is_anomaly"] for ts in offline.timestamp])
    labels = offline.label.to_numpy()
    edges = np.flatnonzero(np.diff(np.r_[0, labels, 0]))
    episodes = list(zip(edges[::2], edges[1::2], strict=True))
    assert episodes
    for start, stop in episodes:
        assert flagged[start:stop].mean() >= 0.1, (start, stop, flagged[start:stop].mean())
    assert flagged[labels == 0].mean() < 0.05

    # The dashboard's score panel query returns the latest score through the real Prometheus.
    dash = json.loads((REPO / "edge/deploy/grafana/dashboards/memae-ts-edge.json").read_text())
    expr = next(p for p in dash["panels"] if p["title"] == "Normalised anomaly score")["targets"][0]["expr"]
    expr = expr.replace("$job", "memae-ts-edge").replace("$asset", ".*")
    last = by_ts(records)[offline.timestamp.iloc[-1]][0]
    result = prometheus_server.wait_for(
        expr,
        lambda res: bool(res) and float(res[0]["value"][1]) == pytest.approx(last["normalised_score"]),
        timeout=30,
    )
    assert result[0]["metric"] == {"asset": "asset-1"}
    assert metric(daemon, "memae_ts_readings_total") == len(edge_data.offline)
    assert metric(daemon, "memae_ts_windows_scored_total") == len(offline)
    assert metric(daemon, "memae_ts_scores_published_total") == len(offline)
    assert metric(daemon, "memae_ts_end_to_end_latency_seconds_count") == len(offline)
    assert metric(daemon, "memae_ts_inference_duration_seconds_count") >= 1
    lags = [ln for ln in daemon.metrics().splitlines() if ln.startswith("memae_ts_consumer_lag_messages{")]
    assert lags and all(line.endswith(" 0.0") for line in lags), lags
    assert metric(daemon, "memae_ts_ready") == 1

    # SIGTERM: exits cleanly and quickly with everything committed; a restart re-scores nothing.
    t0 = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    committed, end = committed_all(kafka_broker.bootstrap, kafka_names.input, kafka_names.group)
    assert {p: c or 0 for p, c in committed.items()} == end  # an empty partition has no commit
    again = edge_daemons("edge-again").start()
    time.sleep(2)
    assert metric(again, "memae_ts_windows_scored_total") == 0
    final = read_topic(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=5)
    assert len(final) == len(offline)


def test_malformed_messages_go_to_the_dead_letter_topic_and_good_ones_are_all_scored(
    kafka_broker, kafka_names, edge_data, edge_daemons
):
    rows = 120
    sensors = json.loads((edge_data.model / "config.json").read_text())["sensors"]
    objects = list(read_messages(edge_data.csv, sensors=sensors))[:rows]
    compact = list(read_messages(edge_data.csv, sensors=sensors, compact=True))[:rows]
    good = [compact[i] if i % 2 else objects[i] for i in range(rows)]  # both forms mixed
    first = json.loads(objects[0][1])
    values = first["values"]
    bad = [
        (b"asset-1", b"{not json", "bad_json"),
        (None, json.dumps({"ts": first["ts"], "values": values}).encode(), "bad_asset"),
        (b"asset-1", json.dumps({"ts": "soon", "values": values}).encode(), "bad_timestamp"),
        (b"asset-1", json.dumps({"ts": first["ts"], "values": {sensors[0]: 1.0}}).encode(), "missing_sensor"),
        (b"asset-1", json.dumps({"ts": 1, "values": {**values, sensors[1]: "hi"}}).encode(), "non_numeric"),
        (b"asset-1", b"[1, 2, 3]", "wrong_length"),
        # a reading from an hour before the asset's previous one
        (b"asset-1", json.dumps({"ts": "2026-10-31T23:00:00Z", "values": values}).encode(), "time_backwards"),
    ]  # fmt: skip
    messages: list[Message] = []
    expected_reasons = []
    for i, msg in enumerate(good):
        messages.append(msg)
        if i % 15 == 7:
            key, value, reason = bad[(i // 15) % len(bad)]
            messages.append((key, value))
            expected_reasons.append(reason)
    assert set(expected_reasons) == {b[2] for b in bad}

    daemon = edge_daemons(batch_size=16).start()
    produce(kafka_broker.bootstrap, kafka_names.input, messages)
    offline = offline_scores(edge_data, rows)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    assert_matches_offline(records, offline)
    dead = wait_count(kafka_broker.bootstrap, kafka_names.dead_letter, len(expected_reasons))
    assert [d.headers["reason"].decode() for d in dead] == expected_reasons
    bad_values = {b[1] for b in bad}
    assert all(d.value in bad_values for d in dead)  # the original message, unchanged
    assert all(int(d.headers["source_offset"]) >= 0 for d in dead)
    for reason, count in Counter(expected_reasons).items():
        assert metric(daemon, "memae_ts_invalid_messages_total", reason=reason) == count


def test_sigkill_and_restart_resumes_from_committed_offsets_without_gaps(
    kafka_broker, kafka_names, edge_data, edge_daemons, replays
):
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    first = edge_daemons("edge-1", batch_size=20).start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, edge_data.csv, rate=300)
    before = wait_count(kafka_broker.bootstrap, kafka_names.output, 150)
    first.kill()
    assert len(before) < len(offline), "killed too late to test anything"
    second = edge_daemons("edge-2", batch_size=20).start()
    join_replay(producer)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=90)
    assert len(records) >= len(offline), second.logs()[-4000:]
    assert_matches_offline(records, offline)  # duplicates allowed, gaps not
    assert len(records) - len(offline) <= 20  # at most the uncommitted batch is scored twice
    assert metric(second, "memae_ts_windows_scored_total") > 0


def test_broker_restart_mid_stream_loses_nothing(kafka_broker, kafka_names, edge_data, edge_daemons, replays):
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    daemon = edge_daemons(batch_size=20).start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, edge_data.csv, rate=300)
    before = wait_count(kafka_broker.bootstrap, kafka_names.output, 100)
    kafka_broker.restart()
    join_replay(producer)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=120)
    assert len(before) < len(offline), "restarted too late to test anything"
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()[-3000:]
    assert_matches_offline(records, offline)
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()[-3000:]
    assert read_topic(kafka_broker.bootstrap, kafka_names.dead_letter, 1, timeout=2) == []


def score_offline(model: Path, csv: Path) -> pd.DataFrame:
    """`memae-ts score` of ``csv``: the scored rows only."""
    out = csv.with_suffix(".scores.csv")
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "score", str(model), str(csv), "-o", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return pd.read_csv(out).dropna(subset=["score"]).reset_index(drop=True)


def test_a_restart_where_the_first_rebuilt_row_was_forward_filled_loses_no_score(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path
):
    """Issue #14: the rebuild point covered the buffered rows but not the earlier row a missing
    value of the first of them was forward-filled from; after a clean restart the first live
    window could not be rebuilt and its score was lost."""
    window = json.loads((edge_data.model / "config.json").read_text())["window"]
    frame = pd.read_csv(edge_data.csv).iloc[:400]
    sensors = [c for c in frame.columns if c not in ("timestamp", "anomaly")]
    stop_at = 200  # readings before the restart
    first_buffered = stop_at - (window - 1)
    frame.loc[first_buffered : first_buffered + 1, sensors[1]] = np.nan  # filled from the row before
    frame.loc[first_buffered + 4, sensors[2]] = np.nan
    frame.loc[60:61, sensors[0]] = np.nan  # filled too, elsewhere
    frame.loc[300:305, sensors[3]] = np.nan  # too long to fill: the series restarts
    csv = tmp_path / "gappy.csv"
    frame.to_csv(csv, index=False)
    offline = score_offline(edge_data.model, csv)
    messages = list(read_messages(csv, sensors=sensors))

    kafka_broker.create_topic(kafka_names.input, partitions=1)
    daemon = edge_daemons(batch_size=7).start()
    produce(kafka_broker.bootstrap, kafka_names.input, messages[:stop_at])
    before = (offline.timestamp <= frame.timestamp[stop_at - 1]).sum()
    assert len(wait_count(kafka_broker.bootstrap, kafka_names.output, before)) == before
    assert daemon.stop() == 0  # everything committed: the restart rebuilds from the rebuild point

    edge_daemons("edge-again", batch_size=7).start()
    produce(kafka_broker.bootstrap, kafka_names.input, messages[stop_at:])
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    assert_matches_offline(records, offline)
    assert len(records) == len(offline)  # a clean stop re-scores nothing


def assets_on_distinct_partitions(partitions: int) -> list[str]:
    """Asset ids that the default partitioner puts on partitions 0..n-1, one each."""
    chosen: dict[int, str] = {}
    for i in range(1000):
        name = f"pump-{i}"
        chosen.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        if len(chosen) == partitions:
            return [chosen[p] for p in range(partitions)]
    raise AssertionError("no spread found")


def four_assets_csv(edge_data, tmp_path: Path, rows: int) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """The first ``rows`` rows of the plant CSV for four assets, one per partition of a
    4-partition topic, interleaved in time; also the offline scores of those rows."""
    assets = assets_on_distinct_partitions(4)
    frame = pd.read_csv(edge_data.csv).iloc[:rows]
    multi = pd.concat([frame.assign(asset=a) for a in assets]).sort_values("timestamp", kind="stable")
    return assets, multi, offline_scores(edge_data, rows)


def test_two_daemons_in_one_group_share_partitions_and_score_every_reading(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path, replays
):
    """Daemon b joins while a is scoring; both score, nothing is lost or scored differently.

    This test used to fail now and then: b needs seconds to start on a busy 2-core machine
    (interpreter, model, group join, and with the eager protocol a rebalance in which a gave up
    all four partitions first), and the replay of 960 readings at 300/s had often ended by then,
    leaving b nothing to score. Now the second half of the readings is produced only once b
    owns its partitions, so b always scores, whatever the machine's load."""
    kafka_broker.create_topic(kafka_names.input, partitions=4)
    rows = 240
    assets, multi, offline = four_assets_csv(edge_data, tmp_path, rows)
    first_half, second_half = tmp_path / "first.csv", tmp_path / "second.csv"
    multi[multi.index < rows // 2].to_csv(first_half, index=False)
    multi[multi.index >= rows // 2].to_csv(second_half, index=False)

    a = edge_daemons("edge-a", batch_size=20).start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, first_half, rate=300)
    first = wait_count(kafka_broker.bootstrap, kafka_names.output, 50)
    assert len(first) >= 50, f"daemon a scored {len(first)} windows alone; its log:\n{a.logs()[-4000:]}"
    b = edge_daemons("edge-b", batch_size=20).start()  # joins mid-stream: rebalance
    b.wait_event("partitions assigned", lambda e: len(e["partitions"]) == 2)
    join_replay(producer)
    join_replay(replays(kafka_broker.bootstrap, kafka_names.input, second_half, rate=300))
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(assets) * len(offline), timeout=90)
    for asset in assets:
        assert_matches_offline(records, offline, asset=asset)
    assert metric(a, "memae_ts_windows_scored_total") > 0
    assert metric(b, "memae_ts_windows_scored_total") > 0
    # Cooperative-sticky: a gave up only the two partitions b took, never all four.
    revoked = [e["partitions"] for e in a.log_events() if e.get("msg") == "partitions revoked"]
    assert revoked and all(len(r) == 2 for r in revoked), revoked


def test_a_rolling_restart_of_one_static_member_does_not_rebuild_the_other(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path
):
    """Static membership (group_instance_id) and cooperative-sticky assignment: a daemon that
    restarts within the session timeout gets its partitions back without a rebalance, so the
    other daemon neither gives up nor rebuilds anything, and no score is lost or repeated."""
    kafka_broker.create_topic(kafka_names.input, partitions=4)
    rows = 200
    assets, multi, offline = four_assets_csv(edge_data, tmp_path, rows)
    halves = [multi[multi.index < rows // 2], multi[multi.index >= rows // 2]]

    def daemon(name: str) -> EdgeProcess:
        kafka = {"group_instance_id": name, "session_timeout_ms": 20000}
        return edge_daemons(name, batch_size=20, config={"kafka": kafka})

    a = daemon("edge-a").start()
    a.wait_event("partitions assigned", lambda e: len(e["partitions"]) == 4)
    b = daemon("edge-b").start()
    b.wait_event("partitions assigned", lambda e: len(e["partitions"]) == 2)
    a.wait_event("partitions revoked")
    produce(kafka_broker.bootstrap, kafka_names.input, read_messages_frame(halves[0], tmp_path / "h0.csv"))
    before = len(assets) * int((offline.timestamp <= halves[0].timestamp.max()).sum())
    assert len(wait_count(kafka_broker.bootstrap, kafka_names.output, before)) == before
    a_events = len(a.log_events())
    a_rebuilds = metric(a, "memae_ts_rebuilds_total")
    a_reread = metric(a, "memae_ts_rebuild_readings_total")

    assert b.stop() == 0
    b_again = daemon("edge-b")
    b_again.workdir = b.workdir  # the same gateway: its log goes on
    b_again.start()
    produce(kafka_broker.bootstrap, kafka_names.input, read_messages_frame(halves[1], tmp_path / "h1.csv"))
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(assets) * len(offline), timeout=90)
    for asset in assets:
        assert_matches_offline(records, offline, asset=asset)
    assert len(records) == len(assets) * len(offline)  # nothing scored twice
    new_events = [e.get("msg") for e in a.log_events()[a_events:]]
    assert "partitions revoked" not in new_events and "partitions assigned" not in new_events, new_events
    assert metric(a, "memae_ts_rebuilds_total") == a_rebuilds
    assert metric(a, "memae_ts_rebuild_readings_total") == a_reread
    assert metric(b_again, "memae_ts_rebuilds_total") == 2  # b rebuilt its own two partitions


def read_messages_frame(frame: pd.DataFrame, path: Path) -> list[Message]:
    frame.to_csv(path, index=False)
    return list(read_messages(path))


def test_sighup_reloads_the_model_between_batches_without_losing_readings(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path
):
    model = tmp_path / "served-model"
    model.mkdir()
    for f in edge_data.model.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    messages = list(read_messages(edge_data.csv))
    offline = offline_scores(edge_data)
    daemon = edge_daemons(model=model, batch_size=25).start()
    old_version = json.loads((model / "config.json").read_text())["model_id"]

    produce(kafka_broker.bootstrap, kafka_names.input, messages[:300])
    wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline_scores(edge_data, 300)))

    # A "new model": same weights, threshold doubled (what a recalibration ships), saved over
    # the served bundle the way save_bundle does it (a new directory renamed into place).
    from memae_ts.engines.bundle import load_bundle, make_bundle, save_bundle

    served = load_bundle(model)
    config = json.loads(json.dumps(served.config))
    threshold = config["threshold"]["value"]
    config["threshold"]["value"] = 2 * threshold
    recalibrated = save_bundle(model, make_bundle(config, served.weights)).model_version
    assert recalibrated != old_version
    daemon.send(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while metric(daemon, "memae_ts_model_reloads_total", result="ok") < 1:
        assert time.monotonic() < deadline, daemon.logs()[-2000:]
        time.sleep(0.2)

    produce(kafka_broker.bootstrap, kafka_names.input, messages[300:])
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    live = by_ts(records)
    assert set(live) == set(offline.timestamp) and len(records) == len(offline)
    for row in offline.itertuples():
        rec = live[row.timestamp][0]
        assert rec["score"] == pytest.approx(row.score, rel=1e-5, abs=1e-9)
        if rec["model_version"] == recalibrated:
            assert rec["normalised_score"] == pytest.approx(row.score / (2 * threshold), rel=1e-5)
        else:
            assert rec["model_version"] == old_version
    versions = [live[ts][0]["model_version"] for ts in offline.timestamp]
    switch = versions.index(recalibrated)
    assert set(versions[:switch]) == {old_version} and set(versions[switch:]) == {recalibrated}
    assert switch >= len(offline_scores(edge_data, 300))

    # A broken bundle is refused and the daemon keeps serving the model it has.
    (model / "config.json").write_text("{broken")
    daemon.send(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while metric(daemon, "memae_ts_model_reloads_total", result="error") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert daemon.get("/readyz")[0] == 200
    assert metric(daemon, "memae_ts_model_info", model="default", version=recalibrated,
                  engine=metric_engine(daemon), sensors=",".join(config["sensors"]),
                  window=str(config["window"])) == 1  # fmt: skip


def metric_engine(daemon: EdgeProcess) -> str:
    for line in daemon.metrics().splitlines():
        if line.startswith("memae_ts_model_info{"):
            return line.split('engine="')[1].split('"')[0]
    raise KeyError("memae_ts_model_info")


def test_health_and_readiness_endpoints(kafka_names, edge_daemons):
    daemon = edge_daemons().start()
    code, body = daemon.get("/healthz")
    assert code == 200 and json.loads(body)["ok"] is True
    code, body = daemon.get("/readyz")
    assert code == 200 and json.loads(body) == {
        "ok": True, "model_loaded": True, "group_joined": True, "broker_reachable": True, "stopping": False,
    }  # fmt: skip
    assert daemon.get("/nope")[0] == 404
    # structured logs: every line is a JSON object with a level and a message
    events = daemon.log_events()
    assert events and all({"ts", "level", "msg"} <= set(e) for e in events)
    assert any(e["msg"] == "model loaded" for e in events)


def test_bad_config_exits_with_a_message(tmp_path):
    bad = tmp_path / "edge.toml"
    bad.write_text("[kafka]\nbrokers = 5\n")
    out = subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "edge", "--config", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "kafka.brokers" in out.stderr


def test_missing_model_exits_nonzero(tmp_path, kafka_broker):
    cfg = tmp_path / "edge.toml"
    missing = tmp_path / "nope"
    cfg.write_text(f'[kafka]\nbrokers = ["{kafka_broker.bootstrap}"]\n[model]\npath = "{missing}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "edge", "--config", str(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0
    assert "nope" in out.stderr


def test_poison_messages_and_dead_letters_the_topic_refuses_never_stop_the_daemon(
    kafka_broker, kafka_names, edge_data, edge_daemons
):
    """Issue #14: 2,000 nested brackets made the fallback JSON parser raise RecursionError
    (exit 1 at every restart, the commit stuck); a dead letter over the dead-letter topic's
    max.message.bytes failed the flush the same way and republished scores at each restart.
    Both are dead letters now, cut to fit and counted; every reading is scored exactly once."""
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    kafka_broker.create_topic(kafka_names.dead_letter, partitions=1, configs={"max.message.bytes": "2048"})
    rows = 80
    good = list(read_messages(edge_data.csv))[:rows]
    nested = b"[" * 2000 + b"]" * 2000  # 4 KB
    long_bad = b'{"ts": "' + b"x" * 3000 + b'"'  # 3 KB, not JSON
    mismatch = (b"asset-1", json.dumps({**json.loads(good[0][1]), "asset": "asset-2"}).encode())
    messages = [*good[:30], (b"asset-1", nested), *good[30:50], (b"asset-1", long_bad), mismatch, *good[50:]]
    daemon = edge_daemons(batch_size=16).start()
    produce(kafka_broker.bootstrap, kafka_names.input, messages)
    offline = offline_scores(edge_data, rows)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    dead = wait_count(kafka_broker.bootstrap, kafka_names.dead_letter, 3)
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()[-3000:]
    assert_matches_offline(records, offline)
    time.sleep(1)
    again = read_topic(kafka_broker.bootstrap, kafka_names.output, len(offline) + 1, timeout=2)
    assert len(again) == len(offline)  # no restart, so nothing was scored twice
    assert [d.headers["reason"] for d in dead] == [b"bad_json", b"bad_json", b"asset_mismatch"]
    assert dead[0].headers["truncated_from_bytes"] == b"4000" and nested.startswith(dead[0].value)
    assert dead[1].headers["truncated_from_bytes"] == str(len(long_bad)).encode()
    assert dead[2].value == mismatch[1]  # fits: unchanged
    assert metric(daemon, "memae_ts_dead_letters_truncated_total") == 2
    assert metric(daemon, "memae_ts_dead_letters_dropped_total") == 0
    assert metric(daemon, "memae_ts_invalid_messages_total", reason="asset_mismatch") == 1
    assert daemon.stop() == 0


def test_systemd_notify_readiness_watchdog_and_stopping(kafka_names, edge_daemons, tmp_path):
    """Type=notify: READY=1 once serving, WATCHDOG=1 from the loop at half WatchdogSec,
    STOPPING=1 on SIGTERM, on a real notification socket as systemd provides it."""
    import socket as socketlib

    path = tmp_path / "notify.sock"
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    try:
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
        daemon = edge_daemons(extra_env=env).start(wait_ready=False)
        messages: list[str] = []
        t0 = time.monotonic()
        while messages.count("WATCHDOG=1") < 3:
            messages.extend(sock.recv(4096).decode().split("\n"))
        assert messages.index("READY=1") < messages.index("WATCHDOG=1")
        # three pings at half of WatchdogSec (0.5 s) come within about 1 s of each other
        assert time.monotonic() - t0 < 15
        daemon.send(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.extend(sock.recv(4096).decode().split("\n"))
        assert daemon.proc is not None and daemon.proc.wait(15) == 0
    finally:
        sock.close()


@pytest.mark.prometheus
def test_readiness_follows_the_broker_and_the_lag_grows_while_the_loop_is_stuck(
    kafka_broker, kafka_names, edge_data, edge_daemons, prometheus_server
):
    """Issue #14: /readyz stayed 200 through a broker outage, and the lag gauge froze when the
    loop stalled, so the lag alert could not fire. The loop is stuck here for real: the output
    topic wants 2 in-sync replicas on a 1-broker cluster, so no score is ever acknowledged and
    the loop waits in its flush (as in a partial broker outage) until the flush deadline, then
    exits with status 1 without committing."""
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    kafka_broker.create_topic(kafka_names.output, partitions=1, configs={"min.insync.replicas": "2"})
    fast = {
        "http": {"broker_timeout_seconds": 4, "lag_interval_seconds": 0.5},
        "processing": {"flush_timeout_seconds": 25},
    }
    daemon = edge_daemons(config=fast).start()
    prometheus_server.set_targets([f"127.0.0.1:{daemon.port}"])

    def ready() -> dict:
        return json.loads(daemon.get("/readyz")[1])

    kafka_broker.stop()
    try:
        deadline = time.monotonic() + 30
        while ready()["broker_reachable"]:
            assert time.monotonic() < deadline, daemon.logs()[-2000:]
            time.sleep(0.2)
        assert daemon.get("/readyz")[0] == 503 and metric(daemon, "memae_ts_broker_up") == 0
    finally:
        kafka_broker.start()
    deadline = time.monotonic() + 60
    while daemon.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, daemon.logs()[-2000:]
        time.sleep(0.2)

    assert daemon.proc is not None and daemon.proc.poll() is None  # it waited, it did not exit


@pytest.mark.prometheus
def test_the_lag_is_measured_beside_the_loop_so_a_stalled_loop_shows(
    kafka_broker, kafka_names, prometheus_server
):
    """Issue #14: the lag gauge was set only after a commit, so a stalled loop froze it and the
    lag alert could not fire. The lag monitor asks the real broker for end offsets on its own
    thread; here the loop's position stands still (a stalled loop) while readings arrive, and
    the lag grows, with its own timestamp; the stall alert's expression fires in the real
    Prometheus on the loop timestamp that stopped."""
    from memae_ts.connectors.metrics import EdgeMetrics
    from memae_ts.edge.http import EdgeHttpServer, HealthState
    from memae_ts.edge.monitor import LagMonitor
    from prometheus_client import CollectorRegistry

    kafka_broker.create_topic(kafka_names.input, partitions=2)
    metrics = EdgeMetrics(CollectorRegistry())
    health = HealthState()
    http = EdgeHttpServer("127.0.0.1", 0, metrics.registry, health)
    http.start()
    prometheus_server.set_targets([f"127.0.0.1:{http.port}"])
    metrics.loop_heartbeat.set(time.time())  # the loop's last poll, then nothing
    monitor = LagMonitor(
        {"bootstrap_servers": [kafka_broker.bootstrap]}, kafka_names.input, lambda: {0, 1},
        lambda: {0: 0, 1: 0}, metrics, health, interval_s=0.5,
    )  # fmt: skip
    monitor.start()
    try:
        produce(
            kafka_broker.bootstrap, kafka_names.input, [(b"pump-%d" % (i % 5), b"[]") for i in range(300)]
        )
        registry = metrics.registry

        def lag() -> float:
            return sum(
                registry.get_sample_value("memae_ts_consumer_lag_messages", {"partition": p}) or 0
                for p in "01"
            )

        deadline = time.monotonic() + 20
        while lag() < 300:
            assert time.monotonic() < deadline, lag()
            time.sleep(0.2)
        assert registry.get_sample_value("memae_ts_broker_up") == 1 and health.broker_reachable()
        rules = (REPO / "edge/deploy/prometheus/memae-ts-alerts.yml").read_text()
        assert 'time() - memae_ts_loop_timestamp_seconds{job="memae-ts-edge"} > 180' in rules
        result = prometheus_server.wait_for(
            'time() - memae_ts_loop_timestamp_seconds{job="memae-ts-edge"} > 3', bool, timeout=30
        )
        assert result
        assert prometheus_server.wait_for(
            'sum(memae_ts_consumer_lag_messages{job="memae-ts-edge"})',
            lambda res: bool(res) and float(res[0]["value"][1]) == 300, timeout=30,
        )  # fmt: skip
    finally:
        monitor.stop()
        http.stop()
