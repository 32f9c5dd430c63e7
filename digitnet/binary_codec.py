"""The binary predict body: raw little-endian tensors with their shape, in the spirit of
the Open Inference Protocol's binary tensor extension (no JSON around the numbers).

Every tensor on the wire is one record, all integers little-endian uint32:

    offset  size      field
    0       4         magic b"DNT1": digitnet tensor, layout version 1 (a new layout gets
                      a new magic, so an old server refuses it instead of misreading it)
    4       8         dtype: the OIP datatype name in ASCII, NUL-padded ("FP32", "INT32")
    12      4         rank R
    16      4 x R     dims
    16+4R   ...       prod(dims) elements of the dtype, little-endian, C order

Request:  one FP32 record [N, side, side] (28 header bytes, then N x side x side x 4).
Response: an FP32 record of the logits [N, classes], then an INT32 record of the classes
          [N] (the arg-max of each row; int32 keeps the second record's data 4-byte
          aligned like the first's, and 10 classes need no more).
Errors:   always the JSON codec's {"error": ..., "reason": ...} with a 4xx status and
          Content-Type application/json, whatever the request's codec: an error is read
          by people and by log tools, and a client can tell the two apart by the
          Content-Type alone.

The checks and messages for sizes, batch limits and pixel values are digitnet.codec's
(check_body_size, check_batch_size, check_pixel_values), so a limit reads the same in
either codec. Decoding is np.frombuffer on the body plus one copy: no Python loop over
values, so it costs about the same at batch 1 and batch 64.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from digitnet.codec import (
    PayloadError,
    check_batch_size,
    check_body_size,
    check_pixel_values,
)
from digitnet.spec import ModelSpec, ServingLimits

# A vendor type rather than application/octet-stream: octet-stream says nothing about the
# layout, and generic tools send it for any bytes (curl --data-binary @file, a proxy's
# default), which a server would then try to read as a tensor. A vendor type names this
# layout; TorchServe's frontend forwards it as raw bytes (it decodes only application/json
# and text/* bodies), and a server that does not speak it answers 415.
BINARY_CONTENT_TYPE = "application/vnd.digitnet.tensor"
MAGIC = b"DNT1"
FP32 = "FP32"
INT32 = "INT32"
_DTYPES = {FP32: np.dtype("<f4"), INT32: np.dtype("<i4")}
_NATIVE = {FP32: np.dtype(np.float32), INT32: np.dtype(np.int32)}
# The fixed part of every record's header: magic, dtype name, rank.
HEADER = struct.Struct("<4s8sI")
_DIM = struct.Struct("<I")
# Ranks a reader accepts at all: bounds the dims it reads before it checks the shape.
_MAX_RANK = 8
# What the binary request's messages call its values (codec.check_pixel_values' `where`).
WHERE = "the tensor's values"


def _record(array: np.ndarray, dtype: str) -> bytes:
    """One tensor record: header, then the array's little-endian bytes."""
    data = np.ascontiguousarray(array, dtype=_DTYPES[dtype])
    header = HEADER.pack(MAGIC, dtype.encode("ascii"), data.ndim)
    dims = struct.pack(f"<{data.ndim}I", *data.shape)
    return header + dims + data.tobytes()


def _read_header(body: bytes | bytearray | memoryview, offset: int = 0
                 ) -> tuple[str, tuple[int, ...], int]:  # fmt: skip
    """(dtype name, shape, offset of the data) of the record starting at `offset`.

    Raises:
        PayloadError: 400 "truncated" when the header is cut short, "wrong_magic" when
            the record does not start with MAGIC, "wrong_shape" for a rank over _MAX_RANK.
    """
    available = len(body) - offset
    magic = bytes(body[offset : offset + len(MAGIC)])
    if len(magic) == len(MAGIC) and magic != MAGIC:
        raise PayloadError(
            400,
            "wrong_magic",
            f"binary tensor must start with {MAGIC!r} (digitnet tensor, layout version 1), "
            f"got {magic!r}",
        )
    if available < HEADER.size:
        raise PayloadError(
            400,
            "truncated",
            f"binary tensor header is cut short: {max(available, 0)} bytes, "
            f"at least {HEADER.size}",
        )
    _, raw_dtype, rank = HEADER.unpack_from(body, offset)
    dtype = raw_dtype.rstrip(b"\0").decode("ascii", "replace")
    if rank > _MAX_RANK:
        raise PayloadError(400, "wrong_shape", f"tensor rank {rank} is over {_MAX_RANK}")
    dims_end = offset + HEADER.size + _DIM.size * rank
    if len(body) < dims_end:
        raise PayloadError(
            400,
            "truncated",
            f"binary tensor header is cut short: rank {rank} needs {dims_end - offset} "
            f"header bytes, the body has {available}",
        )
    shape = struct.unpack_from(f"<{rank}I", body, offset + HEADER.size)
    return dtype, shape, dims_end


def _read_data(body: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...],
               offset: int, exact: bool) -> np.ndarray:  # fmt: skip
    """The record's elements as a native-endian array of `shape` (a copy of the body's).

    Args:
        exact: True when the record must end the body (no bytes after it).

    Raises:
        PayloadError: 400 "wrong_length" when the body holds fewer (or, with `exact`,
            more) bytes than the shape needs.
    """
    wire = _DTYPES[dtype]
    count = math.prod(shape)
    needed = count * wire.itemsize
    have = len(body) - offset
    if have < needed or (exact and have != needed):
        raise PayloadError(
            400,
            "wrong_length",
            f"tensor {list(shape)} of {dtype} needs {needed} data bytes, the body has {have}",
        )
    values = np.frombuffer(body, wire, count, offset)
    # astype copies into a native-endian, writable array that owns its memory: the
    # body's buffer may be reused by the server, and torch warns on read-only arrays.
    return values.astype(_NATIVE[dtype]).reshape(shape)


def encode_binary_request(images: np.ndarray) -> bytes:
    """float [N, side, side] images -> the binary request body."""
    return _record(np.asarray(images), FP32)


def decode_binary_request(
    body: bytes | bytearray | memoryview, spec: ModelSpec, limits: ServingLimits
) -> np.ndarray:
    """Validates a binary request; the server's counterpart of decode_request_format.

    Args:
        body: the raw request body.
        spec: gives the expected image side.
        limits: body size, batch and pixel value limits, as in the JSON codec.

    Returns:
        The images as float32 [N, side, side].

    Raises:
        PayloadError: naming the first problem found (reasons: body_too_large, truncated,
            wrong_magic, wrong_dtype, wrong_shape, empty_batch, batch_too_large,
            wrong_length, non_finite, out_of_range).
    """
    check_body_size(len(body), limits)
    dtype, shape, offset = _read_header(body)
    if dtype != FP32:
        raise PayloadError(
            400,
            "wrong_dtype",
            f"tensor dtype must be {FP32} (float32, little-endian), got {dtype!r}",
        )
    side = spec.side
    if len(shape) != 3 or shape[1:] != (side, side):
        raise PayloadError(
            400,
            "wrong_shape",
            f"tensor must have shape [N, {side}, {side}], got {list(shape)}",
        )
    check_batch_size(shape[0], limits)
    images = _read_data(body, FP32, shape, offset, exact=True)
    check_pixel_values(images, WHERE, limits)
    return images


def encode_binary_predictions(logits: np.ndarray) -> bytes:
    """[N, classes] logits -> the binary reply: the logits record, then the classes."""
    logits = np.asarray(logits, dtype=np.float32)
    return _record(logits, FP32) + _record(logits.argmax(axis=1), INT32)


def decode_binary_predictions(
    body: bytes | bytearray | memoryview, expected_rows: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Binary reply -> (logits float32 [N, classes], classes int64 [N]), as
    digitnet.codec.decode_predictions returns them.

    Raises:
        ValueError: when the body is not a well-formed answer for `expected_rows` images.
    """
    try:
        dtype, shape, offset = _read_header(body)
        if dtype != FP32 or shape != (expected_rows, num_classes):
            raise ValueError(f"logits are {dtype} {list(shape)}, expected "
                             f"{FP32} [{expected_rows}, {num_classes}]")  # fmt: skip
        logits = _read_data(body, FP32, shape, offset, exact=False)
        offset += logits.nbytes
        dtype, shape, offset = _read_header(body, offset)
        if dtype != INT32 or shape != (expected_rows,):
            raise ValueError(f"classes are {dtype} {list(shape)}, expected "
                             f"{INT32} [{expected_rows}]")  # fmt: skip
        classes = _read_data(body, INT32, shape, offset, exact=True).astype(np.int64)
    except PayloadError as err:
        raise ValueError(f"malformed binary reply: {err}") from None
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits hold non-finite values")
    if not np.array_equal(classes, logits.argmax(axis=1)):
        raise ValueError("classes disagree with the arg-max of the logits")
    return logits, classes
