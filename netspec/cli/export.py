"""``netspec export``: a network and its weights in another framework's format, chosen by the
output file's suffix. Each format is one entry of ``FORMATS``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netspec.cli.common import add_set_option, overrides
from netspec.errors import NetspecError

if TYPE_CHECKING:
    from netspec.compiler import Plan
    from netspec.executor import Network


@dataclass(frozen=True)
class ExportRequest:
    """What every format gets: the plan, the network holding the weights to write, the
    weights file's metadata (normalisation, ...), and where to write."""

    plan: Plan
    network: Network
    meta: dict
    output: Path
    weights_from: str


def _export_onnx(request: ExportRequest) -> list[str]:
    from netspec.interchange.onnx_export import (
        META_MEAN,
        META_STD,
        OPSET,
        check_exported,
        export_onnx,
        write_onnx,
    )
    from netspec.interchange.onnx_verify import compare_with_onnxruntime
    from netspec.interchange.onnx_verify import verdict as _verdict

    metadata = {key: str(float(request.meta[field])) for key, field in
                ((META_MEAN, "mean"), (META_STD, "std")) if field in request.meta}
    model = export_onnx(request.plan, request.network.state(), metadata=metadata)
    check_exported(model)
    size = write_onnx(model, request.output)
    lines = [f"wrote {request.output} ({size:,} bytes, opset {OPSET}, {len(model.graph.node)} "
             f"ONNX nodes, weights {request.weights_from}); passes onnx.checker (full check)"]
    error = compare_with_onnxruntime(model, request.network)
    if error is not None:
        lines.append(f"checked against onnxruntime: max |difference| {error:.2e} of the "
                     f"output's largest value{_verdict(error)}")
    return lines


# output suffix -> (what it is, the function that writes it)
FORMATS: dict[str, tuple[str, Callable[[ExportRequest], list[str]]]] = {
    ".onnx": ("ONNX model (pip install 'netspec[onnx]')", _export_onnx),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "; ".join(f"{suffix}: {what}" for suffix, (what, _) in FORMATS.items())
    parser = subparsers.add_parser(
        "export", help="write a network with its weights for other tools (.onnx)",
        description=f"Export SPEC with its weights. The format comes from the output file's "
        f"suffix ({formats}). Without --weights the spec's initial parameters (from its "
        f"seed) are written.")
    parser.add_argument("spec", metavar="SPEC", help="a .toml file or a shipped name")
    parser.add_argument("--weights", metavar="W.npz", help="weights from netspec train or "
                        "netspec import")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help=f"the file to write ({', '.join(FORMATS)})")
    add_set_option(parser)
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from netspec.compiler import compile_plan
    from netspec.executor import Network
    from netspec.spec import load_spec
    from netspec.train.checkpoint import load_weights
    from netspec.train.config import parse_train_config

    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise NetspecError(f"{output}: cannot tell the format from the suffix "
                           f"'{output.suffix}'; use one of {known}")
    spec = load_spec(args.spec, overrides(args))
    plan = compile_plan(spec)
    if args.weights:
        network = Network(plan)
        meta = load_weights(args.weights, network).meta
        weights_from = f"from {args.weights}"
    else:
        seed = parse_train_config(spec.train or {}, file=spec.file,
                                  locate=spec.source.locate).seed
        network = Network(plan, seed=seed)
        meta = {}
        weights_from = f"initial, seed {seed}"
    for line in FORMATS[suffix][1](ExportRequest(plan, network, meta, output, weights_from)):
        print(line)
    return 0
