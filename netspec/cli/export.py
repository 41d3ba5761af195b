"""``netspec export``: a network and its weights in another tool's format, chosen by the output
file's suffix (``.onnx``: an ONNX model; ``.py``: a PyTorch module file, with ``.pt`` weights
beside it). Each format is one entry of ``FORMATS``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netspec.cli.common import add_set_option, overrides
from netspec.common.errors import NetspecError

if TYPE_CHECKING:
    from netspec.plan.compiler import Plan
    from netspec.runtime.executor import Network


@dataclass(frozen=True)
class ExportRequest:
    """What every format gets: the plan, the network holding the weights to write, the
    weights file's metadata (normalisation, ...), and where to write."""

    plan: Plan
    network: Network | None  # None for formats that read the weights themselves
    meta: dict
    output: Path
    weights_from: str
    weights_path: str | None


def _export_onnx(request: ExportRequest) -> list[str]:
    from netspec.interchange.onnx_export import check_exported, export_onnx, write_onnx
    from netspec.interchange.onnx_graph import META_MEAN, META_STD, OPSET
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


def _export_pytorch(request: ExportRequest) -> list[str]:
    from netspec.interchange.torch_module import export_pytorch

    # the PyTorch writer reads the weights itself (netspec .npz or a .pt state_dict)
    return [f"wrote {path}" for path in export_pytorch(request.plan, request.output,
                                                       weights=request.weights_path)]


# output suffix -> (what it is, the function that writes it, whether it needs the network)
FORMATS: dict[str, tuple[str, Callable[[ExportRequest], list[str]], bool]] = {
    ".onnx": ("ONNX model (the onnx extra)", _export_onnx, True),
    ".py": ("PyTorch module file, and model.pt with --weights (the torch extra)",
            _export_pytorch, False),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "; ".join(f"{suffix}: {what}" for suffix, (what, _, _) in FORMATS.items())
    parser = subparsers.add_parser(
        "export", help="write a network with its weights for other tools (.onnx)",
        description=f"Export SPEC with its weights. The format comes from the output file's "
        f"suffix ({formats}). Without --weights the spec's initial parameters (from its "
        f"seed) are written.")
    parser.add_argument("spec", metavar="SPEC", help="a .toml file or a shipped name")
    parser.add_argument("--weights", metavar="W", help="weights: a .npz from netspec train or "
                        "netspec import, or a PyTorch .pt/.pth state_dict")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help=f"the file to write ({', '.join(FORMATS)})")
    add_set_option(parser)
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from netspec.lang.spec import load_spec
    from netspec.plan.compiler import compile_plan
    from netspec.runtime.executor import Network
    from netspec.train.config import parse_train_config
    from netspec.weights.checkpoint import load_weights

    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise NetspecError(f"{output}: cannot tell the format from the suffix "
                           f"'{output.suffix}'; use one of {known}")
    spec = load_spec(args.spec, overrides(args))
    plan = compile_plan(spec)
    _, write, needs_network = FORMATS[suffix]
    network, meta = None, {}
    if args.weights:
        weights_from = f"from {args.weights}"
        if needs_network:
            network = Network(plan)
            meta = load_weights(args.weights, network).meta
    else:
        seed = parse_train_config(spec.train or {}, file=spec.file,
                                  locate=spec.source.locate).seed
        network = Network(plan, seed=seed) if needs_network else None
        weights_from = f"initial, seed {seed}"
    for line in write(ExportRequest(plan, network, meta, output, weights_from, args.weights)):
        print(line)
    return 0
