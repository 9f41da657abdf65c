"""A Python client for ticker: live ticks in three lines, resilient to disconnects.

```python
import ticker.client

async with ticker.client.connect("ws://127.0.0.1:8080/ws", symbols=["AAPL"]) as feed:
    async for tick in feed:
        print(tick.symbol, tick.price)
```

See docs/python-client.md.
"""

from __future__ import annotations

from ticker.client.books import BookError, OrderBook
from ticker.client.feed import Feed, FeedClosed, connect
from ticker.client.links import LinkError
from ticker.client.publisher import Ack, Publisher, PublishError
from ticker.client.state import (
    Candle,
    Connected,
    Disconnected,
    Event,
    Gap,
    ServerError,
    Status,
    SubscriptionRefused,
    Tick,
)

__all__ = [
    "Ack",
    "BookError",
    "Candle",
    "Connected",
    "Disconnected",
    "Event",
    "Feed",
    "FeedClosed",
    "Gap",
    "LinkError",
    "OrderBook",
    "PublishError",
    "Publisher",
    "ServerError",
    "Status",
    "SubscriptionRefused",
    "Tick",
    "connect",
]
