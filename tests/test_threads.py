"""BLAS threads: --threads, the fair share between netspec processes, and the registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.common.errors import NetspecError
from netspec.common.extras import install_line
from netspec.runtime import threads as threads_module
from netspec.runtime.threads import BlasThreads, Neighbour, fair_share

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> int:
    threads_module.load_blas()
    pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    return pools[0]["num_threads"]


@pytest.mark.parametrize(("cores", "neighbours", "share"), [
    (2, [], 2),
    (2, [Neighbour(1, None)], 1),
    (8, [Neighbour(1, None), Neighbour(2, None), Neighbour(3, None)], 2),
    (8, [Neighbour(1, 6)], 2),
    (8, [Neighbour(1, 6), Neighbour(2, None)], 1),
    (2, [Neighbour(1, 4)], 1),            # asked for more than there are: still one thread
    (2, [Neighbour(1, None)] * 5, 1),
])
def test_fair_share(cores, neighbours, share) -> None:
    assert fair_share(cores, neighbours) == share


def test_a_request_sets_the_blas_threads_and_exit_restores_them(tmp_path: Path) -> None:
    before = blas_threads()
    with BlasThreads(1, registry=tmp_path) as limit:
        assert limit.threads == 1
        assert blas_threads() == 1
        # a fixed request never moves
        assert limit.refresh() == 1
        assert [p.name for p in tmp_path.iterdir()] == [str(os.getpid())]
        assert (tmp_path / str(os.getpid())).read_text() == "1"
    assert blas_threads() == before
    assert list(tmp_path.iterdir()) == []


class RegisteredProcess:
    """Another process registered in ``registry`` as netspec registers, until killed."""

    def __init__(self, registry: Path, requested: int | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\n"
             "from pathlib import Path\n"
             "from netspec.runtime.threads import BlasThreads\n"
             "requested = None if sys.argv[2] == 'auto' else int(sys.argv[2])\n"
             "with BlasThreads(requested, registry=Path(sys.argv[1]), cores=4):\n"
             "    print('ready', flush=True)\n"
             "    time.sleep(60)\n", str(registry), str(requested or "auto")],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        assert self.process.stdout.readline().strip() == "ready"
        self.pid = self.process.pid

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


def test_processes_that_ask_for_nothing_split_the_cores(tmp_path: Path) -> None:
    other = RegisteredProcess(tmp_path, None)
    try:
        # a BLAS that may use 4 threads, as on a 4-core machine
        with threadpoolctl.threadpool_limits(4, user_api="blas"), \
                BlasThreads(registry=tmp_path, cores=4) as limit:
            assert limit.neighbours() == [Neighbour(other.pid, None)]
            assert limit.threads == 2
            assert blas_threads() == 2
            other.kill()
            # once it is gone (killed: no chance to tidy up), the machine is ours again
            limit.refresh_seconds = 0
            assert limit.refresh() == 4
            assert blas_threads() == 4
    finally:
        other.kill()
    assert list(tmp_path.iterdir()) == []


def test_a_neighbour_that_asked_for_threads_keeps_them(tmp_path: Path) -> None:
    other = RegisteredProcess(tmp_path, 3)
    try:
        with BlasThreads(registry=tmp_path, cores=4) as limit:
            assert limit.neighbours() == [Neighbour(other.pid, 3)]
            assert limit.threads == 1
    finally:
        other.kill()


def test_left_over_registrations_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / dead.stdout.strip()
    stale.write_text("auto")
    old = tmp_path / "1"          # pid 1 lives, but nobody holds this file's lock for long
    old.write_text("auto")
    past = time.time() - 3600
    os.utime(old, (past, past))
    junk = tmp_path / "notes.txt"
    junk.write_text("not a registration")
    # a BLAS that may use 2 threads, as on a 2-core machine
    with threadpoolctl.threadpool_limits(2, user_api="blas"), \
            BlasThreads(registry=tmp_path, cores=2) as limit:
        assert limit.threads == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_registry_that_is_not_a_directory_means_alone(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with threadpoolctl.threadpool_limits(2, user_api="blas"), \
            BlasThreads(registry=blocker, cores=2) as limit:
        assert limit.threads == 2
        assert limit.neighbours() == []


def test_requests_out_of_range_are_refused() -> None:
    with pytest.raises(NetspecError, match="between 1 and"):
        BlasThreads(0)


def test_without_threadpoolctl_a_request_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(threads_module, "threadpoolctl_available", lambda: False)
    with pytest.raises(NetspecError, match=re.escape(install_line("threads"))):
        BlasThreads(2, registry=tmp_path).__enter__()
    # the default leaves the BLAS alone
    with BlasThreads(registry=tmp_path) as limit:
        assert limit.threads is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["bench", "mlp", "--steps", "1", "--warmup", "0", "--batch-size", "2"],
    ["gradcheck", "mlp", "--samples", "1", "--batch", "1"],
])
def test_cli_threads_option(command, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(threads_module, "default_registry", lambda: tmp_path)
    seen = []
    real_enter = BlasThreads.__enter__

    def spy(self):
        result = real_enter(self)
        seen.append(blas_threads())
        return result

    monkeypatch.setattr(BlasThreads, "__enter__", spy)
    assert main([*command, "--threads", "1"]) == 0
    assert seen == [1]
    if command[0] == "bench":
        assert ", 1 BLAS thread" in capsys.readouterr().out


def test_cli_threads_without_threadpoolctl(monkeypatch, capsys) -> None:
    monkeypatch.setattr(threads_module, "threadpoolctl_available", lambda: False)
    assert main(["gradcheck", "mlp", "--threads", "2"]) == 1
    assert capsys.readouterr().err == ("netspec gradcheck: error: --threads needs threadpoolctl: "
                                       f"{install_line('threads')}\n")


@pytest.mark.parametrize("value", ["0", "-1", "two", "100000"])
def test_cli_threads_bad_values(value, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "mlp", "--threads", value])
    assert exit_info.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_the_default_never_raises_what_the_environment_set(tmp_path: Path) -> None:
    # as OPENBLAS_NUM_THREADS=1 leaves it
    with threadpoolctl.threadpool_limits(1, user_api="blas"), \
            BlasThreads(registry=tmp_path, cores=4) as limit:
        assert limit.threads == 1 and blas_threads() == 1
        limit.refresh_seconds = 0
        assert limit.refresh() == 1


def test_the_limit_reaches_a_blas_that_was_not_loaded_yet(fresh_python):
    # as in the CLI, where a command's handler loads NumPy after its threads are set
    pytest.importorskip("threadpoolctl")
    code = (
        "import sys; from netspec.runtime.threads import BlasThreads\n"
        "with BlasThreads(1) as threads:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    pools = [p for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "    assert pools and all(p['num_threads'] == 1 for p in pools), pools\n"
    )
    fresh_python(code)
