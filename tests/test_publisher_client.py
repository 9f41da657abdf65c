"""``ticker.client.Publisher`` against a real server: acks, refusals, and a connection cut
between the server publishing a batch and its ack arriving (nothing lost, nothing doubled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import StartServer
from ticker.client.publisher import Publisher, PublishError, publish_url
from ticker.core.publish import PublishLimits
from ticker.core.tokens import TokenVerifier, mint


class CutAfterPublish:
    """A TCP proxy that, once, drops the connection instead of passing on the server's
    first frame after the handshake: the server has published, the client never hears."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        cut = self.cuts == 0

        async def up() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
            server_w.close()

        async def down() -> None:
            seen_handshake = False
            while data := await server_r.read(65536):
                if cut and seen_handshake:
                    self.cuts += 1
                    client_w.transport.abort()
                    server_w.transport.abort()
                    return
                seen_handshake = seen_handshake or b"\r\n\r\n" in data
                client_w.write(data)
            client_w.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxy_port(
    start_server: StartServer,
) -> AsyncIterator[tuple[object, int, CutAfterPublish]]:
    node, server = await start_server(publish=PublishLimits())
    proxy = CutAfterPublish(server.port)
    port = await proxy.start()
    yield node, port, proxy
    await proxy.stop()


async def test_a_cut_after_publish_is_resent_and_not_doubled(
    proxy_port: tuple[object, int, CutAfterPublish],
) -> None:
    node, port, proxy = proxy_port
    ticks = [{"s": "AAPL", "p": 100 + i} for i in range(2500)]
    async with Publisher(f"http://127.0.0.1:{port}", batch=1000) as pub:
        ack = await pub.publish(ticks)
    assert proxy.cuts == 1 and pub.reconnects == 1
    assert (ack.accepted, ack.q, ack.replayed) == (2500, {"AAPL": 2500}, 1)
    assert node.bus.published == 2500  # type: ignore[attr-defined]


async def test_a_refused_batch_raises_with_the_problems(start_server: StartServer) -> None:
    node, server = await start_server(publish=PublishLimits())
    async with Publisher(str(server.make_url("/"))) as pub:
        with pytest.raises(PublishError) as caught:
            await pub.publish([{"s": "AAPL", "p": 1}, {"s": "AAPL", "p": "x"}])
        assert caught.value.code == "bad_request"
        assert caught.value.problems == [{"index": 1, "field": "p", "message": "must be a number"}]
        ack = await pub.publish([{"s": "AAPL", "p": 1}])  # the connection stays usable
    assert ack.q == {"AAPL": 1} and node.bus.published == 1


async def test_a_rate_limited_batch_waits_as_told_then_goes_in(start_server: StartServer) -> None:
    node, server = await start_server(publish=PublishLimits(ticks_per_s=2000, max_ticks=2000))
    ticks = [{"s": "AAPL", "p": 100 + i} for i in range(3000)]
    async with Publisher(str(server.make_url("/")), batch=1000) as pub:
        ack = await pub.publish(ticks)  # the third batch is over the 2 000-tick burst
    assert pub.waited >= 1 and pub.reconnects == 0
    assert (ack.accepted, ack.q) == (3000, {"AAPL": 3000})
    assert node.bus.published == 3000  # type: ignore[attr-defined]


async def test_a_wait_past_give_up_raises_the_refusal(start_server: StartServer) -> None:
    _, server = await start_server(publish=PublishLimits(ticks_per_s=10, max_ticks=1000))
    async with Publisher(str(server.make_url("/")), batch=1000, give_up_s=5) as pub:
        await pub.publish([{"s": "AAPL", "p": 1}] * 1000)
        with pytest.raises(PublishError) as caught:  # 100 s away: not worth waiting
            await pub.publish([{"s": "AAPL", "p": 1}] * 1000)
    assert caught.value.code == "rate_limited" and pub.waited == 0


async def test_a_refused_connection_is_not_retried(start_server: StartServer) -> None:
    secret = "p" * 32
    _, server = await start_server(publish=PublishLimits(), auth=TokenVerifier.from_secret(secret))
    subscriber = mint(secret, sub="s", symbols=["*"], ttl_s=60)
    with pytest.raises(PublishError) as caught:
        async with Publisher(str(server.make_url("/")), token=subscriber, give_up_s=30):
            pass
    assert (caught.value.code, caught.value.status) == ("refused", 403)


def test_urls() -> None:
    assert str(publish_url("http://h:8080")) == "ws://h:8080/publish"
    assert str(publish_url("https://h/publish?token=t")) == "wss://h/publish?token=t"
    with pytest.raises(ValueError, match="expected http"):
        publish_url("ftp://h")
