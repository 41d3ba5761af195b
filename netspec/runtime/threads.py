"""How many threads NumPy's BLAS may use, shared fairly between netspec processes.

OpenBLAS starts one thread per core, and its idle threads spin for a while before they sleep.
Two processes that each run a thread on every core then take turns on the cores at every
matrix product: training steps were measured 10-20x slower that way. With threadpoolctl
installed (the ``threads`` extra), a computing command uses ``--threads N`` BLAS
threads, or by default its share of the cores (never more than the BLAS was set to use, say
by ``OPENBLAS_NUM_THREADS``): every such process registers itself in a
per-user directory under the system's temporary directory, and the processes that did not
ask for a number divide between them the cores the others did not claim. A long run
re-counts its neighbours as it goes (:meth:`BlasThreads.refresh`), so one that started
alone steps back when a second one starts.

A registration is a small file named after the process id, holding ``auto`` or the number of
threads asked for, on which the process holds an exclusive ``flock`` while it lives: the
kernel drops the lock when the process dies, however it dies, so a file whose lock can be
taken (and whose process id is gone) is left over and removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from netspec.common.atomic import atomic_write_text
from netspec.common.errors import NetspecError
from netspec.common.extras import install_line

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so every process counts as alone
    fcntl = None  # type: ignore[assignment]

MAX_THREADS = 1024
AUTO = "auto"
# a registration is one short word; anything longer is not ours
_MAX_ENTRY_BYTES = 16
# a registration not locked this long after it was written belongs to a dead process
STARTING_SECONDS = 10.0


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_registry() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"netspec-threads-{uid}"


def threadpoolctl_available() -> bool:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Neighbour:
    """Another live netspec process registered in the same directory."""

    pid: int
    threads: int | None  # None: it takes its share, as we do by default


def fair_share(cores: int, neighbours: list[Neighbour]) -> int:
    """Threads for a process that asked for none: the cores that processes asking for a
    number left over, divided between all that did not (this one included), at least 1."""
    claimed = sum(n.threads for n in neighbours if n.threads is not None)
    sharing = 1 + sum(1 for n in neighbours if n.threads is None)
    return max(1, (cores - claimed) // sharing)


class BlasThreads:
    """A context that limits NumPy's BLAS threads for as long as it is entered.

    ``requested`` is a number of threads, or None for this process's share of the cores.
    Without threadpoolctl a request is refused with the install command, and the default
    leaves the BLAS as it is (``threads`` is then None).
    """

    refresh_seconds = 2.0

    def __init__(self, requested: int | None = None, *, registry: Path | None = None,
                 cores: int | None = None):
        if requested is not None and not 1 <= requested <= MAX_THREADS:
            raise NetspecError(f"--threads must be between 1 and {MAX_THREADS}, got "
                               f"{requested}")
        self.requested = requested
        self.registry = default_registry() if registry is None else registry
        self.cores = usable_cores() if cores is None else cores
        self.threads: int | None = None
        self._limits: Any = None
        self._lock_file: Any = None
        self._entry: Path | None = None
        self._checked = 0.0
        self._ceiling = MAX_THREADS

    def __enter__(self) -> BlasThreads:
        if not threadpoolctl_available():
            if self.requested is not None:
                raise NetspecError(f"--threads needs threadpoolctl: {install_line('threads')}")
            return self
        load_blas()
        self._register()
        self._ceiling = _blas_threads_now()
        self._apply(self.requested or self._share())
        return self

    def _share(self) -> int:
        # never more than the BLAS had when we came (OPENBLAS_NUM_THREADS=1 stays 1)
        return max(1, min(fair_share(self.cores, self.neighbours()), self._ceiling))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        self._unregister()

    def refresh(self) -> int | None:
        """Re-count the neighbours (at most every ``refresh_seconds``) and take the new share;
        returns the threads in use. A fixed ``requested`` number never changes."""
        if self.threads is None or self.requested is not None:
            return self.threads
        now = time.monotonic()
        if now - self._checked >= self.refresh_seconds:
            share = self._share()
            if share != self.threads:
                self._apply(share)
        return self.threads

    def neighbours(self) -> list[Neighbour]:
        """The other live processes registered beside this one; left-over files are removed."""
        self._checked = time.monotonic()
        found = []
        try:
            entries = list(self.registry.iterdir()) if self._registry_is_ours() else []
        except OSError:
            return []
        for path in entries:
            if not path.name.isdigit() or path == self._entry:
                continue
            neighbour = _live_neighbour(path)
            if neighbour is not None:
                found.append(neighbour)
        return found

    def _apply(self, threads: int) -> None:
        from threadpoolctl import threadpool_limits

        if self._limits is not None:
            self._limits.restore_original_limits()
        # BLAS only: an OpenMP runtime in the same process (torch's) keeps its own setting
        self._limits = threadpool_limits(limits=threads, user_api="blas")
        self.threads = threads

    def _registry_is_ours(self) -> bool:
        # a directory someone else made (or a link to one) could feed us their entries
        try:
            info = self.registry.lstat()
        except OSError:
            return False
        owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
        return not self.registry.is_symlink() and self.registry.is_dir() \
            and info.st_uid == owner

    def _register(self) -> None:
        if fcntl is None:
            return
        try:
            self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._registry_is_ours():
                return
            entry = self.registry / str(os.getpid())
            atomic_write_text(entry, AUTO if self.requested is None else str(self.requested))
            handle = open(entry, "rb")  # noqa: SIM115 - held open for the lock's lifetime
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # no registry (read-only temp, no locks): this process counts as alone
            return
        self._entry, self._lock_file = entry, handle

    def _unregister(self) -> None:
        if self._entry is not None:
            with contextlib.suppress(OSError):
                self._entry.unlink()
            self._entry = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def load_blas() -> None:
    """Load NumPy, and so its BLAS, if it is not loaded yet."""
    # threadpoolctl limits the libraries loaded when it is called, and commands load NumPy (and
    # its BLAS) lazily, after their threads are set: without this, --threads changed nothing
    import numpy

    numpy.ndarray  # noqa: B018 - reading an attribute loads a lazily imported module


def _blas_threads_now() -> int:
    """The most threads any BLAS in this process is set to use now."""
    from threadpoolctl import threadpool_info

    counts = [pool.get("num_threads") or 1 for pool in threadpool_info()
              if pool.get("user_api") == "blas"]
    return max(counts, default=MAX_THREADS)


def _live_neighbour(path: Path) -> Neighbour | None:
    """The process registered at ``path`` if it still runs; removes the file if not."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        text = os.read(fd, _MAX_ENTRY_BYTES + 1)
        age = time.time() - os.fstat(fd).st_mtime
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            locked = True
        else:
            locked = False
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        return None
    finally:
        os.close(fd)
    # unlocked but young and alive: it is between writing its file and locking it
    if not locked and (age > STARTING_SECONDS or not _process_exists(int(path.name))):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    word = text.decode("ascii", "replace").strip()
    threads = int(word) if word.isdigit() and 0 < int(word) <= MAX_THREADS else None
    return Neighbour(int(path.name), threads)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True
