"""``netspec doctor``: what this machine offers netspec, for setting up and for bug reports."""

from __future__ import annotations

import argparse
import json
import sys

from netspec.common.tables import Column, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="versions, BLAS threads, CPUs, memory, MNIST and optional extras",
        description="Check what this machine offers netspec: package versions, the BLAS NumPy "
        "uses and its threads, CPUs, memory, whether MNIST is present and intact (never "
        "downloads), and which optional extras are installed.")
    parser.add_argument("--data-dir", help="where to look for MNIST (default: "
                        "$NETSPEC_DATA_DIR, else the cache)")
    parser.add_argument("--quick", action="store_true",
                        help="find MNIST without verifying its checksums")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from netspec.runtime.doctor import as_dicts, diagnose

    checks = diagnose(args.data_dir, verify_mnist=not args.quick)
    if args.json:
        json.dump(as_dicts(checks), sys.stdout, indent=2)
        print()
        return 0
    rows = [[check.name, check.status, check.detail] for check in checks]
    print(render_table([Column("check", "<"), Column("status", "<"), Column("detail", "<")],
                       rows))
    return 0
