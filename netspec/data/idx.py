"""IDX files (the MNIST format): decompression, structure checks and content checksums.

Every failure becomes a :class:`~netspec.common.errors.DataError` that names the file and says
what is wrong with it, because a damaged download otherwise surfaces as an opaque gzip or NumPy
error.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from netspec.common.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
KIND_BY_NDIM = {1: "labels", 3: "images"}


# the largest MNIST file decodes to 47,040,016 bytes
MAX_DECODED_BYTES = 64 * 2**20


def decode(raw: bytes, source: str | os.PathLike[str]) -> bytes:
    """``raw`` gunzipped if it starts with the gzip magic, else unchanged.

    Compression is detected from the content, not the name, because mirrors and packages differ
    in whether they compress and people rename files. ``source`` names the data in errors.
    """
    if not raw.startswith(GZIP_MAGIC):
        return raw
    # inflate at most one byte past the limit, so a tiny file cannot expand to fill memory
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, MAX_DECODED_BYTES + 1)
    except zlib.error as error:
        raise DataError(f"{source}: corrupt gzip stream: {error}") from None
    if len(data) > MAX_DECODED_BYTES:
        raise DataError(f"{source}: decompresses to more than {MAX_DECODED_BYTES // 2**20} MiB, "
                        f"far more than any MNIST file; it is not one")
    if not inflater.eof:
        raise DataError(
            f"{source}: truncated gzip stream (the file ends before the compressed data does)"
        )
    return data


def read_decoded(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, gunzipped if compressed (see :func:`decode`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    return decode(raw, path)


def parse_idx(data: bytes, source: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """The unsigned-byte array stored in IDX ``data`` (read-only, shaped by the header).

    ``source`` only names the file in error messages. With ``ndim`` the magic number must be the
    one for that many dimensions (0x00000803 for images, 0x00000801 for labels). The data must
    fill exactly the size the header announces: a short file was cut off in transit and a long
    one is not the file it claims to be.
    """
    if len(data) < 4:
        raise DataError(f"{source}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    zeros, dtype_byte, file_ndim = data[:2], data[2], data[3]
    if zeros != b"\x00\x00" or (ndim is not None and file_ndim != ndim):
        wanted = (
            f"0x{0x0800 | ndim:08X} ({KIND_BY_NDIM.get(ndim, f'{ndim}-d')})"
            if ndim is not None
            else "0x0000 followed by a type byte and a dimension count"
        )
        raise DataError(f"{source}: bad magic number 0x{magic:08X}, expected {wanted}")
    if dtype_byte != UBYTE:
        raise DataError(
            f"{source}: data type byte is 0x{dtype_byte:02X}, expected 0x{UBYTE:02X} "
            "(unsigned byte)"
        )
    header_size = 4 + 4 * file_ndim
    if len(data) < header_size:
        raise DataError(
            f"{source}: truncated: the header of a {file_ndim}-d IDX file needs {header_size} "
            f"bytes, file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(file_ndim))
    expected = math.prod(dims)
    found = len(data) - header_size
    described = "x".join(str(d) for d in dims)
    if found < expected:
        raise DataError(
            f"{source}: truncated: header says {described} = {expected} bytes of data, "
            f"file has {found}"
        )
    if found > expected:
        raise DataError(
            f"{source}: {found - expected} extra bytes: header says {described} = {expected} "
            f"bytes of data, file has {found}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw; see :func:`parse_idx` for the checks."""
    return parse_idx(read_decoded(path), path, ndim)


def check_sha256(
    data: bytes,
    expected: str,
    source: str | os.PathLike[str],
    advice: str = "delete it and run again to download a fresh copy",
) -> None:
    """Raise unless ``data`` hashes to ``expected``; ``advice`` ends the message.

    The hash covers the decoded bytes because mirrors compress the same files differently.
    """
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{source}: SHA-256 of the decoded data is {actual}, expected {expected}: the file "
            f"is damaged or not the original; {advice}"
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks: archives are too large to hold twice."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    return digest.hexdigest()


def check_file_sha256(
    path: Path,
    expected: str,
    source: str | os.PathLike[str],
    advice: str = "delete it and run again to download a fresh copy",
) -> None:
    """Raise unless the file at ``path`` hashes, as it is, to ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"{source}: SHA-256 is {actual}, expected {expected}: the file is damaged or not "
            f"the original; {advice}"
        )
