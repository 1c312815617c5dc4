"""engine.ShareUploads when a share fails on its final answer: the upload
took every piece, the producer's end too, and then the node refused the
share. The producer must still finish (this hung put for good)."""

from __future__ import annotations

import asyncio

from openheap.errors import from_code
from openheap.storage.engine import ShareUploads


class _Node:
    """The lowest layer a put reaches: takes the whole stream, then answers
    the last block 2.01, or 5.03 when it ``refuses``."""

    def __init__(self, refuses: bool):
        self.refuses = refuses
        self.taken = b""

    async def put_share_stream(self, si, shnum, chunks, size):
        async for c in chunks:
            self.taken += c
        if self.refuses:
            raise from_code(0xA3, "no space")
        return 0x41


class _Grid:
    def __init__(self, clients):
        self.clients = clients


def test_a_share_failing_on_its_last_answer_does_not_hang_the_producer():
    bad, good = _Node(refuses=True), _Node(refuses=False)

    async def go():
        up = ShareUploads(_Grid({"a": bad, "b": good}), b"\0" * 16, 6, {0: "a", 1: "b"})
        await up.feed({0: b"abc", 1: b"xyz"})
        await asyncio.wait_for(up.finish({0: b"def", 1: b"uvw"}), 5)
        return up

    up = asyncio.run(go())
    assert bad.taken == b"abcdef" and good.taken == b"xyzuvw"
    assert up.sent == {1: "b"} and list(up.failed) == [0] and "no space" in up.failed[0]

