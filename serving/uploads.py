"""A file route's body: the multipart part that holds the file, and the pool that does the work.

The body is taken as it arrives (the front door bounds it) and parsed here, strictly: a file
route takes one multipart file part named `file` and nothing else. A text field named `file`
is refused, so no URL a caller names is ever fetched (BentoML's own file inputs download one),
and the part's file name is never used for anything, so it cannot reach the file system.

Reading, validating and writing a table costs CPU in proportion to the file; it runs in a small
pool of threads per API worker (`offload`), never on the event loop, so single-record requests
keep being answered while a large or hostile upload is read. At most `threads + waiting`
uploads are admitted at once (`admitted`); beyond that, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from serving.errors import ApiError, problem
from serving.settings import get_settings

T = TypeVar("T")

#: The multipart field a file route reads.
FILE_FIELD = "file"
_HOW = "send the file as multipart/form-data in the field 'file' (curl -F file=@scores.csv)"


def _malformed(reason: str) -> ApiError:
    return ApiError(
        400,
        f"request body: not valid multipart/form-data ({reason}); {_HOW}",
        code="malformed_multipart",
        detail=[problem(FILE_FIELD, reason)],
    )


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.pieces: list[bytes | memoryview] = []
        self._name = b""
        self._value = b""


def file_part(body: bytes, content_type: str | None) -> bytes:
    """The bytes of the one file part named `file`; ApiError 415 (not multipart) or 400."""
    media, params = parse_options_header(content_type or "")
    if media != b"multipart/form-data":
        raise ApiError(
            415,
            f"Content-Type {(content_type or 'missing')!r}: {_HOW}",
            code="unsupported_media_type",
            detail=[problem("Content-Type", "must be multipart/form-data")],
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(
            400,
            "Content-Type: multipart/form-data needs its boundary parameter "
            "(let the HTTP client set the header; curl -F does)",
            code="malformed_multipart",
            detail=[problem("Content-Type", "no boundary")],
        )
    parts = _parse(body, boundary)
    files = []
    for part in parts:
        disposition, options = parse_options_header(part.headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if disposition != b"form-data" or not name:
            raise _malformed("a part without a Content-Disposition: form-data name")
        if name != FILE_FIELD:
            raise ApiError(
                400,
                f"form field {name!r}: unknown; a file route takes only the field 'file'",
                code="unknown_field",
                detail=[problem(name, "unknown form field")],
            )
        if b"filename" not in options:
            raise ApiError(
                400,
                "file: sent as a text field; it must be a file part (curl -F file=@scores.csv). "
                "URLs are not fetched",
                code="not_a_file",
                detail=[problem(FILE_FIELD, "a text field, not a file")],
            )
        files.append(part)
    if not files:
        raise ApiError(
            400,
            f"file: the body has no part named 'file'; {_HOW}",
            code="missing_file",
            detail=[problem(FILE_FIELD, "missing")],
        )
    if len(files) > 1:
        raise ApiError(
            400,
            f"file: {len(files)} files sent; send one file per request",
            code="several_files",
            detail=[problem(FILE_FIELD, "more than one file")],
        )
    return b"".join(files[0].pieces)


def _parse(body: bytes, boundary: bytes) -> list[_Part]:
    parts: list[_Part] = []

    def begin() -> None:
        parts.append(_Part())

    def header_field(data: bytes, start: int, end: int) -> None:
        parts[-1]._name += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        parts[-1]._value += data[start:end]

    def header_end() -> None:
        part = parts[-1]
        part.headers[part._name.decode("latin-1").lower()] = part._value
        part._name = part._value = b""

    def data(chunk: bytes, start: int, end: int) -> None:
        # Slices of the body itself are kept as views: the file is copied once, when joined.
        piece = memoryview(body)[start:end] if chunk is body else bytes(chunk[start:end])
        parts[-1].pieces.append(piece)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise _malformed(str(exc)) from exc
    if parser.state != MultipartState.END:
        raise _malformed("the body ends before the closing boundary")
    return parts


class UploadPool:
    """Threads for upload work, and how many uploads may be in progress at once."""

    def __init__(self, threads: int, waiting: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="clientinsight-upload")
        self.capacity = threads + waiting
        self.active = 0

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One upload's turn; 503 with Retry-After when `capacity` uploads are in progress."""
        if self.active >= self.capacity:
            raise ApiError(
                503,
                f"busy: {self.active} uploads are being scored by this API worker; retry shortly",
                code="uploads_busy",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of the pool's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))


_pool: UploadPool | None = None
_pool_lock = threading.Lock()


def pool() -> UploadPool:
    """This process's pool, made on first use (never at import)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            settings = get_settings()
            _pool = UploadPool(settings.upload_threads, settings.uploads_waiting)
        return _pool


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` off the event loop, in this process's upload pool."""
    return await pool().run(fn, *args)
