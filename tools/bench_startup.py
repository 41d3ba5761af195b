"""How long ``netspec`` commands take as whole processes, next to a bare Python start and to
importing NumPy, pydantic and networkx, all measured in one run.

Every case is a fresh interpreter (``sys.executable``), started ``--reps`` times; the cases take
turns within each repetition (their order rotating), so that a busy moment on a shared machine
falls on all of them alike. Reported: median, min and max wall seconds, and the median's ratio
to the two references.

    python tools/bench_startup.py                 # from the repository root
    python tools/bench_startup.py --reps 21 --json startup.json
    python tools/bench_startup.py --netspec netspec   # the installed console script instead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netspec.common.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BARE = "python -c pass"
HEAVY = "import numpy, pydantic, networkx"


def cases(netspec: list[str], scratch: Path) -> dict[str, list[str]]:
    python = [sys.executable]
    return {
        BARE: python + ["-c", "pass"],
        HEAVY: python + ["-c", "import numpy, pydantic, networkx"],
        "netspec --help": netspec + ["--help"],
        "netspec list": netspec + ["list"],
        "netspec schema -o FILE": netspec + ["schema", "-o", str(scratch / "s.json")],
        "netspec compile (argument error)": netspec + ["compile", "--batch-size", "x"],
        "netspec compile lenet5": netspec + ["compile", "lenet5"],
        "netspec compile resnet_mini": netspec + ["compile", "resnet_mini"],
    }


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict[str, list[str]], reps: int,
            warmup: int) -> dict[str, list[tuple[float, float]]]:
    # as on a user's machine, netspec's own modules load from .pyc files once written
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    names = list(commands)
    for _ in range(warmup):  # fills the page cache and the .pyc files
        for name in names:
            run_once(commands[name], env)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(run_once(commands[name], env))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=11, help="timed runs per case (default 11)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--netspec", default=None, metavar="PROGRAM",
                        help="run this program (e.g. the installed 'netspec' script) instead "
                        "of 'python -m netspec' from this checkout")
    parser.add_argument("--json", metavar="FILE", help="also write the times as JSON")
    args = parser.parse_args()
    netspec = [args.netspec] if args.netspec else [sys.executable, "-m", "netspec"]
    with tempfile.TemporaryDirectory() as scratch:
        times = measure(cases(netspec, Path(scratch)), args.reps, args.warmup)
    wall = {name: [w for w, _ in values] for name, values in times.items()}
    cpu = {name: [c for _, c in values] for name, values in times.items()}
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; {args.reps} runs per case, interleaved")
    for title, table in (("wall seconds (the whole process, as a user waits)", wall),
                         ("CPU seconds, user + system (steadier on a busy machine)", cpu)):
        medians = {name: statistics.median(values) for name, values in table.items()}
        print(f"\n{title}")
        print(f"{'case':<34} {'median':>7} {'min':>7} {'max':>7} {'x bare':>7} {'x heavy':>8}")
        for name, values in table.items():
            print(f"{name:<34} {medians[name]:>7.3f} {min(values):>7.3f} {max(values):>7.3f} "
                  f"{medians[name] / medians[BARE]:>7.2f} "
                  f"{medians[name] / medians[HEAVY]:>8.2f}")
    if args.json:
        atomic_write_text(args.json, json.dumps({
            "python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg(),
            "wall": wall, "cpu": cpu}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
