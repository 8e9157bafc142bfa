"""A file route's body: only one multipart file part named `file`, nothing fetched, nothing
written under the caller's file name; and the pool that admits uploads."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.errors import ApiError
from serving.uploads import UploadPool, file_part


def _multipart(
    files: dict[str, tuple[str, bytes]] | None = None, **fields: str
) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files or None, data=fields or None)
    return request.read(), request.headers["content-type"]


def _refusal(body: bytes, content_type: str | None) -> ApiError:
    with pytest.raises(ApiError) as info:
        file_part(body, content_type)
    return info.value


def test_the_file_part_comes_back_byte_for_byte() -> None:
    payload = b"a,b\r\n--not-the-boundary\r\n\x00\xff" * 1000
    body, content_type = _multipart({"file": ("x.csv", payload)})
    assert file_part(body, content_type) == payload


def test_a_file_name_longer_than_any_file_system_takes_is_never_used() -> None:
    body, content_type = _multipart({"file": ("a" * 1000 + ".csv", b"a\n1\n")})
    assert file_part(body, content_type) == b"a\n1\n"
    body, content_type = _multipart({"file": ("a" * 50_000 + ".csv", b"a\n1\n")})
    refusal = _refusal(body, content_type)
    assert refusal.status == 400 and "header size" in refusal.message


@pytest.mark.parametrize(
    ("content_type", "status", "words"),
    [
        ("multipart/form-data", 400, "boundary"),
        ("application/json", 415, "multipart/form-data"),
        (None, 415, "multipart/form-data"),
    ],
)
def test_a_body_that_is_not_multipart_is_refused(
    content_type: str | None, status: int, words: str
) -> None:
    refusal = _refusal(b'{"file": "x"}', content_type)
    assert refusal.status == status and words in refusal.message


def test_a_boundary_with_a_body_that_is_not_multipart_is_400() -> None:
    refusal = _refusal(b"just some text", "multipart/form-data; boundary=xyz")
    assert refusal.status == 400 and "not valid multipart/form-data" in refusal.message


def test_a_body_cut_before_its_closing_boundary_is_400() -> None:
    body, content_type = _multipart({"file": ("x.csv", b"a\n1\n" * 100)})
    refusal = _refusal(body[: len(body) // 2], content_type)
    assert refusal.status == 400 and "closing boundary" in refusal.message


def test_a_url_in_a_text_field_is_refused_not_fetched() -> None:
    request = httpx.Request(
        "POST", "http://x/", files={"file": (None, "http://169.254.169.254/latest/meta-data/")}
    )
    body, content_type = request.read(), request.headers["content-type"]
    refusal = _refusal(body, content_type)
    assert refusal.status == 400 and refusal.code == "not_a_file"
    assert "URLs are not fetched" in refusal.message


def test_other_fields_two_files_or_none_are_400() -> None:
    body, content_type = _multipart({"file": ("x.csv", b"a\n")}, note="hello")
    assert _refusal(body, content_type).code == "unknown_field"
    body, content_type = _multipart({"upload": ("x.csv", b"a\n")})
    assert _refusal(body, content_type).code == "unknown_field"
    request = httpx.Request(
        "POST", "http://x/", files=[("file", ("a.csv", b"a\n")), ("file", ("b.csv", b"b\n"))]
    )
    assert _refusal(request.read(), request.headers["content-type"]).code == "several_files"
    empty = b"--xyz--\r\n"
    assert _refusal(empty, "multipart/form-data; boundary=xyz").code == "missing_file"


def test_the_pool_admits_only_its_capacity() -> None:
    async def scenario() -> tuple[int, ApiError]:
        uploads = UploadPool(threads=1, waiting=1)
        async with uploads.admitted(), uploads.admitted():
            with pytest.raises(ApiError) as info:
                async with uploads.admitted():
                    pass
        assert uploads.active == 0
        return await uploads.run(sum, [1, 2, 3]), info.value

    total, refusal = asyncio.run(scenario())
    assert total == 6
    assert refusal.status == 503 and refusal.headers == {"Retry-After": "1"}
