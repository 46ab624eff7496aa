"""`memae-ts export`: write a bundle's network as an ONNX model."""

from __future__ import annotations

import argparse

from memae_ts.cli.commands.common import formatter

EPILOG = """\
examples:
  memae-ts export pump-model --onnx pump.onnx
      inputs: windows float32 (batch, window, sensors), raw sensor units
      outputs: scores (batch,), contributions (batch, sensors), reconstruction, attention
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "export",
        help="export a model bundle to ONNX",
        description="Export the bundle's network (scaling, memory and score included) as an ONNX model "
        "with a dynamic batch dimension, checked by onnx.checker.",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("--onnx", required=True, metavar="PATH", help="where to write the .onnx file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.engines.bundle import load_bundle
    from memae_ts.engines.export_onnx import OPSET, export_onnx

    bundle = load_bundle(args.model)
    path = export_onnx(bundle, args.onnx)
    print(f"wrote {path} (ONNX opset {OPSET}, dynamic batch) from {bundle.path}")
    return 0
