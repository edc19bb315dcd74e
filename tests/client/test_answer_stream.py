"""How an answer's raw stream is read: whole, however many chunks it comes in, never past the
cap, and closed explicitly (an async generator left to the collector warns on trio)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cmpay_async import PayloadTooLargeError
from cmpay_async._transport import MAX_ANSWER, _read_capped

pytestmark = pytest.mark.anyio


class _Chunks:
    """An async iterator over given chunks that counts its ``aclose`` calls."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.left = list(chunks)
        self.closed = 0

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.left:
            raise StopAsyncIteration
        return self.left.pop(0)

    async def aclose(self) -> None:
        self.closed += 1


class _Unclosable:
    """An async iterator with no ``aclose`` at all (any async iterator may be a stream)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.left = list(chunks)

    def __aiter__(self) -> _Unclosable:
        return self

    async def __anext__(self) -> bytes:
        if not self.left:
            raise StopAsyncIteration
        return self.left.pop(0)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, iterator: AsyncIterator[bytes]) -> None:
        self.iterator = iterator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iterator


def _response(iterator: AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, stream=_Stream(iterator))


@pytest.mark.parametrize(
    "chunks",
    [[], [b"returnCode=000000"], [b"returnCode=", b"000000"], [b"return", b"Code=", b"000000"]],
    ids=["none", "one", "two", "three"],
)
async def test_an_answer_is_read_whole_however_many_chunks_it_comes_in(
    chunks: list[bytes],
) -> None:
    """The body is every chunk joined, in order: never the first chunk alone."""
    body = await _read_capped(_response(_Chunks(chunks)), 200)

    assert b"".join(chunks) == body


async def test_the_raw_stream_is_closed_once_after_a_whole_answer() -> None:
    """Read to its end, the stream is still closed explicitly, once."""
    chunks = _Chunks([b"a", b"b"])

    await _read_capped(_response(chunks), 200)

    assert 1 == chunks.closed


async def test_the_raw_stream_is_closed_once_when_the_answer_is_refused_as_too_large() -> None:
    """Reading stops at the first chunk past the cap, and the stream is closed there."""
    chunks = _Chunks([b"a" * MAX_ANSWER, b"b", b"never read"])

    with pytest.raises(PayloadTooLargeError) as caught:
        await _read_capped(_response(chunks), 502)

    assert (1, [b"never read"]) == (chunks.closed, chunks.left)
    assert (502, True) == (caught.value.status_code, caught.value.maybe_sent)


async def test_a_stream_without_aclose_is_read_all_the_same() -> None:
    """Closing is done when the iterator offers it; one that cannot be closed is not an error."""
    body = await _read_capped(_response(_Unclosable([b"a", b"b"])), 200)

    assert b"ab" == body
