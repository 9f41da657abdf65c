"""Live exchange feeds: ``--feed coinbase:...``, ``binance:...``, ``kraken:...``.

One module per pipeline role: ``numbers.py`` (exact decimals), ``trades.py`` (trade ids:
duplicates and gaps), ``venue.py`` (an exchange's protocol without I/O, one subclass per
exchange: ``coinbase.py``, ``binance.py``, ``kraken.py``), ``link.py`` (one connection:
subscribe, watchdog, reconnect, rotation), ``feed.py`` (the ``FeedAdapter``), ``args.py``
(the ``--feed`` ARGS).
"""
