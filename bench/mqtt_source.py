"""Throughput of the edge daemon reading MQTT (QoS 1, persistent session, acknowledged after the
scores are out) through a real Mosquitto broker, beside a bare subscriber as the peer.

Method: a backlog of N readings (several assets, demo plant data) is published into a
persistent session while its owner is away, then the owner connects and takes it all:

1. **bare subscriber**: a paho client (QoS 1, automatic acknowledgements) that only counts
   messages — the ceiling for any Python MQTT consumer on this machine and broker;
2. **daemon**: ``memae-ts edge`` with ``[source] kind = "mqtt"``: receive → parse → window →
   score → publish scores (QoS 1, waits for every PUBACK) → journal → acknowledge.

Each side runs ``--runs`` times, alternating, on distinct backlogs (the same rows); printed:
median readings/s (wall) from the connection (the daemon: from its first reading, so its start
is not counted) to the last acknowledgement, CPU seconds per 1000 readings (the daemon's from
/proc, its own process only), and the ratio daemon / bare. The
broker runs on the same cores, so absolute numbers drift with the machine's load; the ratio is
what to compare.

Run:  .venv/bin/python bench/mqtt_source.py               (about two minutes)
      .venv/bin/python bench/mqtt_source.py --assets 16 --days 1 --runs 5
Needs `make tools` (Mosquitto).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
import pandas as pd  # noqa: E402
from edge_process import EdgeProcess  # noqa: E402
from memae_ts.edge.replay import read_messages  # noqa: E402
from mqtt_service import MosquittoBroker, missing_reason  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

NO_JOURNAL = "--no-journal" in sys.argv  # what the journal's fsync per checkpoint costs


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "memae_ts.cli", *args], cwd=REPO, check=True, capture_output=True)


def make_data(
    work: Path, assets: int, days: float, model: Path | None
) -> tuple[list[tuple[str, bytes]], Path]:
    if model is None:
        model = work / "model"
        cli("demo-data", str(work / "train.csv"), "--days", "2", "--seed", "1", "--no-faults")
        cli("fit", str(work / "train.csv"), "-o", str(model), "--epochs", "3", "-q", "--max-gap", "180")
    cli("demo-data", str(work / "one.csv"), "--days", str(days), "--seed", "2")
    one = pd.read_csv(work / "one.csv")
    multi = pd.concat([one.assign(asset=f"pump-{i}") for i in range(assets)]).sort_values(
        "timestamp", kind="stable"
    )
    multi.to_csv(work / "plant.csv", index=False)
    return [(f"plant/line1/{k.decode()}/telemetry", v) for k, v in read_messages(work / "plant.csv")], model


def session_client(broker: MosquittoBroker, client_id: str, **kwargs: object) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs
    )
    client.max_inflight_messages_set(1000)
    return client


def connect(client: mqtt.Client, broker: MosquittoBroker) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 10_000
    client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)


def publish_backlog(broker: MosquittoBroker, messages: list[tuple[str, bytes]]) -> None:
    pub = session_client(broker, "bench-plc")
    connect(pub, broker)
    pub.loop_start()
    infos = [pub.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()


def bare_run(broker: MosquittoBroker, messages: list[tuple[str, bytes]], run: int) -> tuple[float, float]:
    """(readings/s, CPU s per 1000 readings of this process) of a subscriber that only counts."""
    cid = f"bench-bare-{run}"
    sub = session_client(broker, cid)
    got = threading.Event()
    count = [0]

    def on_connect(client, userdata, flags, reason, props):  # type: ignore[no-untyped-def]
        if not flags.session_present:
            client.subscribe("plant/+/+/telemetry", qos=1)

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] >= len(messages):
            got.set()

    sub.on_connect, sub.on_message = on_connect, on_message
    connect(sub, broker)  # create the session, then go away
    sub.loop_start()
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    publish_backlog(broker, messages)
    count[0] = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    connect(sub, broker)
    sub.loop_start()
    assert got.wait(300), f"bare subscriber got {count[0]} of {len(messages)}"
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    sub.disconnect()
    sub.loop_stop()
    return len(messages) / wall, cpu / len(messages) * 1000


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(daemon: EdgeProcess, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", daemon.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def daemon_run(
    broker: MosquittoBroker, messages: list[tuple[str, bytes]], model: Path, work: Path, run: int
) -> tuple[float, float]:
    config = {
        "source": {"kind": "mqtt", "state_dir": "" if NO_JOURNAL else str(work / f"state-{run}")},
        "mqtt": {"port": broker.port, "client_id": f"bench-edge-{run}", "topics": ["plant/+/+/telemetry"],
                 "score_topic": "bench/scores/{asset}"},
    }  # fmt: skip
    daemon = EdgeProcess(
        work / f"edge-{run}", bootstrap="127.0.0.1:9", input_topic="-", output_topic="-",
        dead_letter_topic="-", group="-", model=model, batch_size=5000, config=config,
    )  # fmt: skip
    daemon.start()  # creates the session and subscribes
    assert daemon.stop() == 0
    publish_backlog(broker, messages)
    daemon.start(wait_ready=False)
    assert daemon.proc is not None
    t0 = cpu0 = None  # from its first reading processed: start-up (imports, model) not counted
    deadline = time.monotonic() + 600
    while True:
        try:
            seen = metric(daemon, "memae_ts_readings_total")
        except OSError:
            seen = 0
        if t0 is None and seen > 0:
            t0, cpu0, first = time.monotonic(), proc_cpu(daemon.proc.pid), seen
        if seen >= len(messages) and metric(daemon, "memae_ts_readings_in_progress") == 0:
            break
        assert daemon.proc.poll() is None, daemon.logs()[-2000:]
        assert time.monotonic() < deadline, "daemon too slow"
        time.sleep(0.01)
    assert t0 is not None and cpu0 is not None
    wall, cpu, n = time.monotonic() - t0, proc_cpu(daemon.proc.pid) - cpu0, len(messages) - first
    assert daemon.stop() == 0
    return n / wall, cpu / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=int, default=8)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--no-journal", action="store_true", help="daemon without source.state_dir")
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(reason)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        messages, model = make_data(work, args.assets, args.days, args.model)
        broker = MosquittoBroker(work / "broker").start()
        try:
            bare, edge = [], []
            for run in range(args.runs):
                bare.append(bare_run(broker, messages, run))
                edge.append(daemon_run(broker, messages, model, work, run))
                print(f"run {run + 1}: bare {bare[-1][0]:,.0f}/s, daemon {edge[-1][0]:,.0f}/s", flush=True)
        finally:
            broker.stop()
    b, e = statistics.median(r for r, _ in bare), statistics.median(r for r, _ in edge)
    cb, ce = statistics.median(c for _, c in bare), statistics.median(c for _, c in edge)
    print(
        f"\n{len(messages):,} readings ({args.assets} assets), MQTT 5 QoS 1, {args.runs} runs each, medians:"
    )
    print(f"  bare subscriber      {b:>9,.0f} readings/s   CPU {cb:.3f} s/1000")
    print(f"  memae-ts edge (mqtt) {e:>9,.0f} readings/s   CPU {ce:.3f} s/1000 (whole process)")
    print(f"  ratio daemon / bare  {e / b:.2f}")


if __name__ == "__main__":
    main()
