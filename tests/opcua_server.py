"""A real OPC UA server for the tests (asyncua's server, binary protocol, loopback), run as its
own process: ``python opcua_server.py PORT START END RATE ASSET=CSV [ASSET=CSV ...]``.

Each asset is an object with one Double variable per CSV sensor column, node id
``ns=2;s=<asset>.<sensor>``. The variables start at row START (source timestamp = the row's
time); once a client has subscribed, rows START+1 .. END-1 are written at RATE rows per second,
each value with the row's time as its source timestamp. An empty CSV cell is written as a value
with the status code BadSensorFailure (what a PLC reports for a broken sensor). Prints
``written N`` when done and serves until killed.

``--secure=DIR`` (anywhere in the arguments): only Basic256Sha256 (Sign, SignAndEncrypt)
endpoints, the server certificate ``DIR/server.der`` with key ``DIR/server.pem``, and only
client certificates in ``DIR/trust/`` are trusted (what a plant server set up by the book does).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

NAMESPACE = "urn:memae-ts:test-plant"


def data_value(value: float, ts: datetime) -> ua.DataValue:
    if pd.isna(value):
        return ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure),
            SourceTimestamp=ts,
        )
    return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double), SourceTimestamp=ts)


async def main(
    port: int, start: int, end: int, rate: float, assets: dict[str, str], secure: Path | None = None
) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/memae-ts/")
    if secure is None:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        server.set_security_policy(
            [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign]
        )
        await server.load_certificate(str(secure / "server.der"))
        await server.load_private_key(str(secure / "server.pem"))
        trust = TrustStore([secure / "trust"], [])
        await trust.load()
        options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        server.set_certificate_validator(CertificateValidator(options, trust))
    idx = await server.register_namespace(NAMESPACE)
    frames = {a: pd.read_csv(path) for a, path in assets.items()}
    variables: dict[str, dict[str, object]] = {}
    for asset, frame in frames.items():
        obj = await server.nodes.objects.add_object(ua.NodeId(asset, idx), f"{idx}:{asset}")
        sensors = [c for c in frame.columns if c not in ("timestamp", "anomaly")]
        variables[asset] = {}
        for s in sensors:
            var = await obj.add_variable(
                ua.NodeId(f"{asset}.{s}", idx), f"{idx}:{s}", 0.0, ua.VariantType.Double
            )
            variables[asset][s] = var
    times = {a: pd.to_datetime(f.timestamp, utc=True) for a, f in frames.items()}

    async def write_row(i: int) -> None:
        for asset, frame in frames.items():
            ts = times[asset][i].to_pydatetime().astimezone(timezone.utc).replace(tzinfo=None)
            for s, var in variables[asset].items():
                await var.write_value(data_value(frame[s].iloc[i], ts))  # type: ignore[attr-defined]

    await write_row(start)
    async with server:
        subs = server.iserver.subscription_service.subscriptions
        while not any(sub.monitored_item_srv._monitored_items for sub in subs.values()):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the initial values reach the client first
        for i in range(start + 1, end):
            await write_row(i)
            await asyncio.sleep(1.0 / rate)
        print(f"written {end - start}", flush=True)
        while True:
            await asyncio.sleep(3600)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--secure=")]
    args = [a for a in sys.argv[1:] if a not in flags]
    port, start, end, rate = int(args[0]), int(args[1]), int(args[2]), float(args[3])
    assets = dict(arg.split("=", 1) for arg in args[4:])
    secure = Path(flags[0].split("=", 1)[1]) if flags else None
    asyncio.run(main(port, start, end, rate, assets, secure))
