"""End-to-end streaming benchmark of the edge daemon through a real Kafka broker.

What it measures, in one run on this machine (numbers go to the README):

1. **bare consumer**: a kafka-python consumer group member that only reads the input messages
   (no parsing) — the ceiling for any Python Kafka consumer here.
2. **daemon throughput**: ``memae-ts edge`` on the same backlog: consume → parse → window →
   score (engine) → produce scores (acks=all) → commit. Readings per second from its first
   score to its last commit, and the ratio to (1) (goal ≥ 0.7).
3. **engine share**: time inside ``engine.score`` (the daemon's
   ``memae_ts_inference_duration_seconds_sum``) over the daemon's wall time; CPU per reading of
   the consumer, the daemon and the broker (from /proc), and the ceiling they put on any daemon
   on this machine's cores.
4. **latency**: readings produced at a steady rate below capacity; p50/p99 from the reading's
   Kafka timestamp to its score record's Kafka timestamp (both set on this host).

Run:  .venv/bin/python bench/stream.py            (about two minutes; starts its own broker)
      .venv/bin/python bench/stream.py --assets 16 --days 3 --rate 3000
Needs `make tools` (Kafka jars). The model is fitted on the fly unless --model is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pandas as pd  # noqa: E402
from edge_process import EdgeProcess  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka_service import KafkaBroker, missing_reason  # noqa: E402

from edge.replay import read_messages, replay  # noqa: E402


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "memae_ts.cli", *args], cwd=REPO, check=True, capture_output=True)


def make_data(work: Path, assets: int, days: float, model: Path | None) -> tuple[Path, Path]:
    if model is None:
        model = work / "model"
        cli("demo-data", str(work / "train.csv"), "--days", "2", "--seed", "1", "--no-faults")
        cli("fit", str(work / "train.csv"), "-o", str(model), "--epochs", "3", "-q", "--max-gap", "180")
    cli("demo-data", str(work / "one.csv"), "--days", str(days), "--seed", "2")
    one = pd.read_csv(work / "one.csv")
    multi = pd.concat([one.assign(asset=f"pump-{i}") for i in range(assets)])
    multi = multi.sort_values("timestamp", kind="stable")
    multi.to_csv(work / "plant.csv", index=False)
    return work / "plant.csv", model


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float = 0.0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024)
    replay(messages, producer, topic, rate=rate)
    producer.close()


def bare_consumer(bootstrap: str, topic: str, n: int, batch_size: int, broker_pid: int) -> tuple:
    """(readings/s, own CPU s, broker CPU s) of a consumer group member that only reads
    (first to last message)."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bare-{time.time()}", auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=batch_size,
    )  # fmt: skip
    got, first, last = 0, 0.0, 0.0
    cpu0, broker0 = time.process_time(), cpu_seconds(broker_pid)
    try:
        while got < n:
            batch = consumer.poll(timeout_ms=1000)
            now = time.perf_counter()
            count = sum(len(v) for v in batch.values())
            if count and not first:
                first = now
            got += count
            last = now
        consumer.commit()
        cpu, broker_cpu = time.process_time() - cpu0, cpu_seconds(broker_pid) - broker0
    finally:
        consumer.close()
    return n / (last - first), cpu, broker_cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), e.g. the broker's JVM."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def wait_committed(bootstrap: str, topic: str, group: str, timeout: float = 600) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    end = consumer.end_offsets(parts)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if all((consumer.committed(tp) or 0) >= end[tp] for tp in parts):
                return
            time.sleep(0.2)
        raise TimeoutError("daemon did not commit everything")
    finally:
        consumer.close()


def score_timestamps(bootstrap: str, topic: str) -> list[tuple[str, str, int]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    out = []
    for m in consumer:
        body = json.loads(m.value)
        out.append((body["asset"], body["ts"], m.timestamp))
    consumer.close()
    return out


def input_timestamps(bootstrap: str, topic: str) -> dict[tuple[str, str], int]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    out = {}
    for m in consumer:
        body = json.loads(m.value)
        ts = body[0] if isinstance(body, list) else body["ts"]
        out[(m.key.decode(), ts)] = m.timestamp
    consumer.close()
    return out


def run_daemon(
    work: Path, name: str, bootstrap: str, topic: str, model: Path, batch: int, threads: int, out: str
) -> EdgeProcess:
    """A daemon in its own group reading ``topic``, writing ``{out}.scores`` and ``{out}.dlq``."""
    return EdgeProcess(
        work / name, bootstrap=bootstrap, input_topic=topic, output_topic=f"{out}.scores",
        dead_letter_topic=f"{out}.dlq", group=f"{name}-group", model=model, batch_size=batch,
        client_id=name, extra_env={"MEMAE_TS_MODEL_THREADS": str(threads)},
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=8)
    ap.add_argument("--days", type=float, default=10.0, help="days of 1-minute data per asset")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=5000, help="the daemon's default")
    ap.add_argument("--rate", type=float, default=2000.0, help="readings/s for the latency run")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3, help="interleaved bare/daemon pairs")
    ap.add_argument("--engine-threads", type=int, default=1, help="[model] threads of the daemon")
    ap.add_argument("--compact", action="store_true", help="readings in the compact array form")
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="memae-ts-bench-") as tmp:
        work = Path(tmp)
        broker = KafkaBroker(work / "kafka", partitions=args.partitions)
        broker.start()
        try:
            csv, model = make_data(work, args.assets, args.days, args.model)
            config = json.loads((model / "config.json").read_text())
            messages = list(read_messages(csv, sensors=config["sensors"], compact=args.compact))
            n = len(messages)
            print(
                f"data: {n} readings, {args.assets} assets, {len(config['sensors'])} sensors, "
                f"window {config['window']}, {args.partitions} partitions, batch {args.batch_size}, "
                f"{'compact' if args.compact else 'JSON object'} messages"
            )

            broker.create_topic("bench.in", args.partitions)
            produce(broker.bootstrap, "bench.in", messages)

            # Interleaved so that both see the same background load (this machine is shared).
            pid = broker.proc.pid
            bare, results = [], []
            for i in range(1, args.runs + 1):
                bare.append(bare_consumer(broker.bootstrap, "bench.in", n, args.batch_size, pid))
                daemon = daemon_run(work, f"edge{i}", broker, model, args.batch_size, args.engine_threads)
                results.append(daemon)
            bare_rate, bare_cpu, bare_broker_cpu = max(bare)
            runs = ", ".join(f"{b[0]:,.0f}" for b in bare)
            print(f"bare kafka-python consumer: {bare_rate:,.0f} readings/s (best of runs: {runs})")
            daemon_rate, wall, engine, scored, engine_name, daemon_cpu, broker_cpu = max(results)
            runs = ", ".join(f"{r[0]:,.0f}" for r in results)
            print(
                f"edge daemon (engine {engine_name}): {daemon_rate:,.0f} readings/s, {scored} scores "
                f"in {wall:.2f} s (best of runs: {runs})"
            )
            pairs = sorted(r[0] / b[0] for r, b in zip(results, bare, strict=True))
            print(
                f"ratio daemon / bare consumer: {daemon_rate / bare_rate:.2f} best to best, "
                f"{statistics.median(pairs):.2f} median of the interleaved pairs (goal >= 0.7)"
            )
            print(f"engine share of daemon time: {engine / wall:.1%} ({engine:.2f} s in engine.score)")
            us = 1e6 / n
            print(
                f"CPU per reading: bare consumer {bare_cpu * us:.1f} us + broker {bare_broker_cpu * us:.1f} "
                f"us; daemon {daemon_cpu * us:.1f} us (engine {engine * us:.1f}) + broker "
                f"{broker_cpu * us:.1f} us"
            )
            # Reading (as the bare consumer does), the engine and the broker's share are the
            # least CPU any daemon needs per reading; spread perfectly over all cores:
            cores = os.cpu_count() or 1
            ceiling = cores * 1e6 / ((bare_cpu + engine + broker_cpu) * us)
            print(
                f"ceiling on {cores} cores for a daemon that only reads, scores and produces: "
                f"{ceiling:,.0f} readings/s = {ceiling / bare_rate:.2f} of the bare consumer"
            )

            # Latency at a steady rate below capacity.
            broker.create_topic("bench.lat", args.partitions)
            daemon = run_daemon(
                work, "edge-lat", broker.bootstrap, "bench.lat", model, args.batch_size,
                args.engine_threads, out="bench.lat",
            )  # fmt: skip
            daemon.start()
            count = min(n, int(args.rate * args.latency_seconds))
            produce(broker.bootstrap, "bench.lat", messages[:count], rate=args.rate)
            wait_committed(broker.bootstrap, "bench.lat", "edge-lat-group")
            daemon.stop()
            produced = input_timestamps(broker.bootstrap, "bench.lat")
            lat = sorted(
                (ts_ms - produced[(asset, ts)]) / 1000.0
                for asset, ts, ts_ms in score_timestamps(broker.bootstrap, "bench.lat.scores")
            )
            p50 = statistics.median(lat)
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(f"latency at {args.rate:,.0f} readings/s ({len(lat)} scores): "
                  f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (produce -> score record)")  # fmt: skip
        finally:
            broker.stop()
    return 0


def daemon_run(work: Path, name: str, broker: KafkaBroker, model: Path, batch: int, threads: int) -> tuple:
    """One daemon on the backlog of bench.in (own group, own score topic): (readings/s, wall
    seconds, engine seconds, scores, engine name, daemon CPU s, broker CPU s)."""
    topic = "bench.in"
    bootstrap = broker.bootstrap
    broker0 = cpu_seconds(broker.proc.pid)
    daemon = run_daemon(work, name, bootstrap, topic, model, batch, threads, out=name)
    daemon.start()
    assert daemon.proc is not None
    startup_cpu = cpu_seconds(daemon.proc.pid)  # imports, model load: not per reading
    wait_committed(bootstrap, topic, f"{name}-group")
    daemon_cpu = cpu_seconds(daemon.proc.pid) - startup_cpu
    broker_cpu = cpu_seconds(broker.proc.pid) - broker0
    metrics = daemon.metrics()
    daemon.stop()
    scores = score_timestamps(bootstrap, f"{name}.scores")
    first_score = min(s[2] for s in scores) / 1000.0
    wall = metric_value(metrics, "memae_ts_last_processed_timestamp_seconds") - first_score
    rate = metric_value(metrics, "memae_ts_readings_total") / wall
    engine = metric_value(metrics, "memae_ts_inference_duration_seconds_sum")
    return rate, wall, engine, len(scores), daemon_engine(metrics), daemon_cpu, broker_cpu


def daemon_engine(metrics: str) -> str:
    for line in metrics.splitlines():
        if line.startswith("memae_ts_model_info{"):
            return line.split('engine="')[1].split('"')[0]
    return "?"


if __name__ == "__main__":
    sys.exit(main())
