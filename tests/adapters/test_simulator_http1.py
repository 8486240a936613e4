"""The simulator's webhook HTTP client against a raw server that exercises keep-alive edge cases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.simulator.http1 import Http1Connection

RESPONSES = [
    # chunked body, kept alive
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # explicit close: the client must reconnect for the next request
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    # kept alive by the headers, then silently dropped by the server (idle timeout)
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
]


class RawServer:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                response = RESPONSES[len(self.requests) - 1]
                writer.write(response)
                await writer.drain()
                if b"Connection: close" in response or response.startswith(b"HTTP/1.1 204"):
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[RawServer, str]]:
    state = RawServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield state, f"http://127.0.0.1:{port}/hooks/sim?v=1"


async def test_keep_alive_chunked_close_and_stale_connections(raw_server: tuple[RawServer, str]) -> None:
    state, url = raw_server
    connection = Http1Connection(url, timeout=2.0)
    headers = {"webhook-id": "msg_1"}

    statuses = [await connection.post(headers, b'{"n":%d}' % n) for n in range(3)]
    await asyncio.sleep(0.05)
    statuses.append(await connection.post(headers, b'{"n":3}'))
    connection.close()

    assert statuses == [200, 202, 204, 500]
    assert state.connections == 3
    assert state.requests[0].startswith(b"POST /hooks/sim?v=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"webhook-id: msg_1\r\n" in state.requests[0]
    assert state.requests[3].endswith(b'\r\n\r\n{"n":3}')


async def test_an_unreachable_receiver_raises() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await Http1Connection(f"http://127.0.0.1:{port}/", timeout=1.0).post({}, b"{}")


async def test_a_silent_receiver_times_out() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(TimeoutError):
            await Http1Connection(f"http://127.0.0.1:{port}/", timeout=0.2).post({}, b"{}")
