"""``memae-ts edge`` and ``memae-ts replay`` (registered by memae_ts.cli via COMMAND_MODULES).

Runnable on its own too: ``python -m memae_ts.edge.cli edge --config edge.toml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

log = logging.getLogger("memae_ts.edge")

EDGE_EXAMPLES = """\
examples:
  memae-ts edge --config /etc/memae-ts/edge.toml
  memae-ts edge --config edge.toml --check          validate config and model, then exit
  MEMAE_TS_KAFKA_BROKERS=10.0.0.5:9092 memae-ts edge --config edge.toml
"""

REPLAY_EXAMPLES = """\
examples:
  memae-ts replay live.csv --topic sensor-readings --brokers 127.0.0.1:9092 --rate 50
  memae-ts replay plant.csv --topic readings --asset-column machine --model pump-model --compact
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "edge",
        help="run the edge daemon: Kafka, MQTT or OPC UA readings in, scores out (Kafka/MQTT + Prometheus)",
        description="Run the edge daemon. See docs/edge.md for the config file and message contract.",
        epilog=EDGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="TOML config file (environment MEMAE_TS_<SECTION>_<KEY> overrides it)")
    p.add_argument("--check", action="store_true", help="validate the config and the model, then exit")
    p.set_defaults(handler=run_edge)

    r = subparsers.add_parser(
        "replay",
        help="produce a sensor CSV into a Kafka topic as reading messages",
        description="Produce each CSV row as one reading message (key = asset), at --rate rows/s.",
        epilog=REPLAY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("csv", help="sensor CSV (timestamp column, sensor columns, optional asset column)")
    r.add_argument("--topic", required=True, help="input topic of the edge daemon")
    r.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers, comma separated")
    r.add_argument("--rate", type=float, default=0.0, help="rows per second (0 = as fast as possible)")
    r.add_argument("--limit", type=int, default=None, help="stop after this many rows")
    r.add_argument("--asset", default="asset-1", help="asset id when the CSV has no asset column")
    r.add_argument("--asset-column", default=None)
    r.add_argument("--time-column", default=None)
    r.add_argument("--model", default=None, help="bundle whose sensor list (and order) to send")
    r.add_argument("--compact", action="store_true", help="compact array form [ts, v0, v1, ...]")
    r.set_defaults(handler=run_replay)


def run_edge(args: argparse.Namespace) -> int:
    from memae_ts.edge import logs
    from memae_ts.edge.config import ConfigError, EdgeConfig

    try:
        config = EdgeConfig.load(args.config)
    except (ConfigError, OSError) as exc:
        print(f"memae-ts edge: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.logging.level)
    from memae_ts.edge.daemon import EdgeDaemon

    if args.check:
        from memae_ts.edge.model import load_served_model

        failed = 0
        for section in config.models:  # every [[model]] section (or the one [model])
            try:
                model = load_served_model(section.path, section.engine, section.threads, section.name)
            except Exception as exc:
                print(f"memae-ts edge: model {section.name!r} ({section.path}): {exc}", file=sys.stderr)
                failed += 1
                continue
            known = "known" if model.training_range is not None else "unknown (old bundle)"
            print(
                f"ok: model {section.name} {model.version} ({model.engine_name}), "
                f"{len(model.sensors)} sensors, training range {known}"
            )
        return 3 if failed else 0
    from confluent_kafka import KafkaException
    from memae_ts.edge.daemon import EXIT_BROKER

    daemon = EdgeDaemon(config)
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    except KafkaException as exc:  # e.g. the broker lost mid-start: let the supervisor retry
        log.error("kafka unavailable; exiting", extra={"error": repr(exc)})
        return EXIT_BROKER


def run_replay(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from memae_ts.edge.replay import read_messages, replay, sensors_of_bundle

    sensors = sensors_of_bundle(args.model) if args.model else None
    messages = read_messages(
        args.csv,
        asset=args.asset,
        asset_column=args.asset_column,
        time_column=args.time_column,
        sensors=sensors,
        compact=args.compact,
    )
    producer = KafkaProducer(
        bootstrap_servers=[b.strip() for b in args.brokers.split(",") if b.strip()],
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    try:
        sent = replay(messages, producer, args.topic, rate=args.rate, limit=args.limit)
    finally:
        producer.close()
    print(f"replayed {sent} readings to {args.topic}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memae-ts")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
