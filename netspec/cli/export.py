"""``netspec export SPEC [--weights W] -o FILE``: a network for another tool, chosen by the
suffix of FILE (``.py``: a PyTorch module file, with ``.pt`` weights beside it)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from netspec.errors import NetspecError

# output suffix -> (module, function(spec, out, weights) -> written paths, what it writes)
EXPORTERS = {
    ".py": ("netspec.interchange.torch_module", "export_pytorch",
            "a PyTorch module file (and model.pt with --weights)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "; ".join(f"{suffix}: {what}" for suffix, (_, _, what) in EXPORTERS.items())
    parser = subparsers.add_parser(
        "export", help="write the network in another tool's format (by the -o suffix)",
        description=f"Write SPEC in another tool's format, chosen by the suffix of -o "
        f"({formats}).")
    parser.add_argument("spec", help="a .toml file or a shipped name")
    parser.add_argument("-o", "--out", required=True, help="the file to write")
    parser.add_argument("--weights", help="weights to include: a .npz from a run, or a "
                        "PyTorch .pt/.pth state_dict")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    suffix = Path(args.out).suffix.lower()
    if suffix not in EXPORTERS:
        known = ", ".join(EXPORTERS)
        raise NetspecError(f"{args.out}: cannot tell the format from the suffix "
                           f"'{suffix or '(none)'}'; use one of {known}")
    module, function, _ = EXPORTERS[suffix]
    exporter = getattr(importlib.import_module(module), function)
    for path in exporter(args.spec, args.out, weights=args.weights):
        print(f"wrote {path}")
    return 0
