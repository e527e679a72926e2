"""A server that costs (almost) nothing: ``python -m benchmarks.nullserver``, for scenario 1b.

Raw asyncio, HTTP/1.1 keep-alive, no routing, no authentication: a POST is answered 202 with one
fixed snapshot, a GET 200 with a quota of no limit (the pre-flight check), anything else 404. It
prints ``listening on URL`` and serves until SIGTERM or SIGINT. Against it the client's own cost is
what sets the pace, where against the emulator (70-80% of a core) that cost is hidden.
``--latency-ms N`` holds each answer N ms (a timer, no CPU), for the latency-bound scenario 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

import orjson

SNAPSHOT = orjson.dumps(
    {
        "snapshot": {
            "id": "00000000-0000-4000-8000-000000000000",
            "status": "creating",
            "name": "null",
            "volume_id": "00000000-0000-4000-8000-000000000000",
            "size": 10,
        }
    }
)
QUOTA = orjson.dumps({"quota_set": {"snapshots": {"limit": -1, "in_use": 0, "reserved": 0}}})
NOT_FOUND = orjson.dumps({"error_code": "APIGW.0101", "error_msg": "The API does not exist"})


def response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "X-Request-Id: 0123456789abcdef0123456789abcdef\r\n\r\n"
    ).encode() + body


ANSWERS = {
    b"POST": response("202 Accepted", SNAPSHOT),
    b"GET": response("200 OK", QUOTA),
}
MISSING = response("404 Not Found", NOT_FOUND)


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests parsed by their head and Content-Length, answered in order."""

    def __init__(self, latency: float = 0.0) -> None:
        self.buffer = b""
        self.latency = latency
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end]
            length = 0
            marker = head.lower().find(b"\r\ncontent-length:")
            if marker >= 0:
                stop = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : stop if stop >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            out.append(ANSWERS.get(head[: head.find(b" ")], MISSING))
        if out and self.transport is not None:
            if self.latency > 0:  # later answers are scheduled later: a connection's stay in order
                asyncio.get_running_loop().call_later(self.latency, self.answer, b"".join(out))
            else:
                self.transport.write(b"".join(out))

    def answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(latency_ms: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(latency_ms / 1000), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nullserver")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="hold each answer this long")
    args = parser.parse_args(sys.argv[1:])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.latency_ms))
