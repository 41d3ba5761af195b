"""The ``--threads`` option of the commands that compute (train, evaluate, predict, bench,
gradcheck); :func:`netspec.cli.main` enters
:class:`netspec.runtime.threads.BlasThreads` for them."""

from __future__ import annotations

import argparse

from netspec.runtime.threads import MAX_THREADS, BlasThreads


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=_thread_count, default=None, metavar="N",
        help="BLAS threads for matrix products (default: this process's share of the "
        "machine's cores, divided with the other netspec processes running; needs "
        "threadpoolctl, the threads extra)")


def _thread_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_THREADS}, got {value}")
    return value


def threads_note(threads: BlasThreads) -> str:
    """``", 2 BLAS threads"`` for a header line, or nothing when the BLAS was left alone."""
    if threads.threads is None:
        return ""
    return f", {threads.threads} BLAS thread{'s' if threads.threads != 1 else ''}"
