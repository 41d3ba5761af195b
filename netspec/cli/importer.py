"""``netspec import``: an ONNX model as a netspec spec, with its weights beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from netspec.common.atomic import atomic_write_text
from netspec.common.errors import NetspecError

if TYPE_CHECKING:
    from netspec.interchange.onnx_import import ImportedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="turn an ONNX model into a spec (.toml) and weights (.npz)",
        description="Translate MODEL.onnx into a netspec spec and write its weights beside it "
        "(net.toml -> net.npz), ready for compile, draw, evaluate, predict, train --weights "
        "and export. Every op or attribute netspec cannot express is listed, and nothing is "
        "written then.")
    parser.add_argument("model", metavar="MODEL.onnx")
    parser.add_argument("-o", "--output", required=True, metavar="NET.toml",
                        help="the spec to write; the weights go to the same name with .npz")
    parser.add_argument("--input-shape", metavar="C,H,W",
                        help="the per-sample input shape, for models whose input has symbolic "
                        "axes besides the batch")
    parser.add_argument("--mean", type=float, help="the mean the model's inputs were "
                        "standardised with, on pixels scaled to [0, 1] (default: the model's "
                        "netspec metadata, else 0)")
    parser.add_argument("--std", type=float, help="the standard deviation to go with --mean "
                        "(default: the model's netspec metadata, else 1)")
    parser.set_defaults(handler=run_import)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise NetspecError(f"--input-shape {text!r}: give positive sizes separated by commas, "
                           f"e.g. 1,28,28")
    return dims


def run_import(args: argparse.Namespace) -> int:
    from netspec.interchange.onnx_import import import_onnx
    from netspec.weights.checkpoint import save_checkpoint

    output = Path(args.output)
    if output.suffix != ".toml":
        raise NetspecError(f"{output}: the spec must be a .toml file (its weights go beside "
                           f"it as .npz)")
    if (args.mean is None) != (args.std is None):
        raise NetspecError("give --mean and --std together")
    if args.std is not None and not args.std > 0:
        raise NetspecError(f"--std must be positive, got {args.std}")
    shape = _shape(args.input_shape) if args.input_shape else None
    imported = import_onnx(args.model, input_shape=shape, name=output.stem)
    if args.mean is not None:
        mean, std, said = args.mean, args.std, "as given"
    elif imported.normalisation is not None:
        (mean, std), said = imported.normalisation, "from the model's metadata"
    else:
        mean, std, said = 0.0, 1.0, "pixels scaled to [0, 1] as they are; set --mean/--std " \
                                    "if the model was trained on standardised inputs"
    weights = output.with_suffix(".npz")
    # the weights first: a spec is never left without them
    save_checkpoint(weights, imported.network, meta={"source": imported.source,
                                                     "mean": mean, "std": std})
    atomic_write_text(output, imported.spec_text)
    plan = imported.plan
    print(f"imported {args.model}: {imported.onnx_nodes} ONNX nodes -> {len(plan.nodes)} "
          f"netspec nodes, {plan.total_params:,} params, output {plan.nodes[plan.output].shape}")
    if imported.static_batch is not None:
        print(f"the model fixes its batch at {imported.static_batch}; the imported network "
              f"takes any batch")
    print(f"wrote {output} and {weights} (input normalisation: mean {mean:g}, std {std:g}, "
          f"{said})")
    _compare(args.model, imported)
    return 0


def _compare(model: str, imported: ImportedModel) -> None:
    """netspec's forward against onnxruntime's on the original file, when onnxruntime is
    installed; a model onnxruntime cannot run is said so, not fatal."""
    from netspec.interchange.onnx_verify import compare_with_onnxruntime
    from netspec.interchange.onnx_verify import verdict as _verdict

    try:
        error = compare_with_onnxruntime(model, imported.network,
                                         input_names=imported.input_ids)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
        # onnxruntime says what it expected on the lines after the first: keep them all
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"onnxruntime could not run {model} to compare: {reason}")
        return
    if error is not None:
        print(f"checked against onnxruntime: max |difference| {error:.2e} of the output's "
              f"largest value{_verdict(error)}")
