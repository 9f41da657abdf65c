"""The simulated market's prices: geometric Brownian motion on a tick grid.

Pure numpy, no event loop and no Python loop per tick or per symbol: a step costs a fixed
number of array operations, so the feed's rate is bounded by building dicts, not by the
maths. Same seed, same calls: same ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, overload

import numpy as np
import numpy.typing as npt

TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
"""Volatility is quoted per trading year; the model's time is in trading seconds."""

MAX_HALF_SPREAD = 3
"""The bid sits 1 to this many ticks below the trade price, the ask as many above."""

MIN_PRICE_TICKS = MAX_HALF_SPREAD + 1
"""Prices are floored here, so even the bid of a collapsed stock is a positive price."""

MAX_DECIMALS = 8
"""Finer tick sizes than this are not prices (and would overflow the integer maths)."""

LOT = 100
SIZE_TAIL = 1.5
"""Pareto exponent of the number of lots per trade: mostly 1-2 lots, now and then a block."""
MAX_LOTS = 1000


class Grid:
    """Prices on a tick grid: ``ticks`` (integers) to the float nearest the decimal.

    A price is ticks * units / scale: one correctly rounded division from exact integers,
    so it prints as 189.12, and an integer and a numpy array of it give the same float.
    """

    __slots__ = ("scale", "units")

    def __init__(self, tick_size: float) -> None:
        if not (math.isfinite(tick_size) and tick_size > 0):
            raise ValueError("tick_size must be a positive number")
        decimals = next(
            (d for d in range(MAX_DECIMALS + 1) if round(tick_size, d) == tick_size), None
        )
        if decimals is None:
            raise ValueError(f"tick_size must have at most {MAX_DECIMALS} decimals")
        self.scale = int(10**decimals)
        self.units = round(tick_size * self.scale)

    @overload
    def price(self, ticks: int) -> float: ...
    @overload
    def price(self, ticks: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]: ...
    def price(self, ticks: int | npt.NDArray[np.int64]) -> float | npt.NDArray[np.float64]:
        """The price of ``ticks`` (one number or an array of them)."""
        price: float | npt.NDArray[np.float64] = (ticks * self.units) / self.scale
        return price

    def ticks(self, price: float) -> int:
        """The grid point of a price this grid made (the inverse of ``price``)."""
        return round(price * self.scale) // self.units


class Ticks(NamedTuple):
    """One step's ticks, in time order; ``idx`` indexes the model's symbols."""

    idx: npt.NDArray[np.intp]
    price: npt.NDArray[np.float64]
    bid: npt.NDArray[np.float64]
    ask: npt.NDArray[np.float64]
    size: npt.NDArray[np.int64]


class MarketModel:
    """``n_symbols`` independent GBM prices (zero drift) sampled at random ticks.

    Each symbol gets a start price (log-uniform over ``price_range``) and an annual
    volatility (uniform over ``volatility_range``) drawn from ``seed``; ``start_prices``
    fixes the start of some (one per symbol, None: drawn), whatever the seed. A tick moves its
    symbol by a GBM increment over the time since that symbol's previous tick, so the
    variance per second is the same for busy and quiet symbols.
    """

    def __init__(
        self,
        n_symbols: int,
        *,
        seed: int | None,
        skew: float = 0.0,
        tick_size: float = 0.01,
        price_range: tuple[float, float] = (20.0, 500.0),
        volatility_range: tuple[float, float] = (0.15, 0.80),
        start_prices: Sequence[float | None] = (),
    ) -> None:
        if n_symbols < 1:
            raise ValueError("n_symbols must be >= 1")
        if not skew >= 0:
            raise ValueError("skew must be >= 0")
        if len(start_prices) > n_symbols:
            raise ValueError("start_prices: at most one per symbol")
        fixed = [(i, p) for i, p in enumerate(start_prices) if p is not None]
        if not all(math.isfinite(p) and p > 0 for _, p in fixed):
            raise ValueError("start_prices must be positive numbers (or None)")
        self.n_symbols = n_symbols
        self.tick_size = tick_size
        self.grid = Grid(tick_size)
        self._rng = rng = np.random.default_rng(seed)

        low, high = price_range
        start = np.exp(rng.uniform(math.log(low), math.log(high), n_symbols))
        for i, price in fixed:  # after the draw: the other symbols' draws stay the same
            start[i] = price
        start_ticks = np.maximum(np.rint(start / tick_size), MIN_PRICE_TICKS)
        self.start_ticks = start_ticks.astype(np.int64)
        """Each symbol's start price in ticks of ``tick_size``."""
        self.start_price = self.grid.price(self.start_ticks)
        self.volatility = rng.uniform(*volatility_range, n_symbols)
        self._variance = self.volatility**2 / TRADING_SECONDS_PER_YEAR  # per second
        self._log_ticks = np.log(start_ticks)  # the exact path; prices round it to the grid
        self._last_tick_time = np.zeros(n_symbols)
        self._now = 0.0

        # A tick's symbol: a rank drawn from a continuous power law, floor(x) for density
        # proportional to x**-skew on [1, n + 1), so rank r has weight about 1 / r**skew (skew
        # 0 is uniform). Inverting its CDF costs O(1) per tick whatever n_symbols. Ranks go to
        # symbols through a seeded shuffle, so the busy symbols are not always the first names.
        self.skew = skew
        self._symbol_of_rank = rng.permutation(n_symbols)
        edges = self._rank_cdf(np.arange(1, n_symbols + 2, dtype=np.float64))
        self.weights = np.empty(n_symbols)
        """Probability that a tick is of each symbol."""
        self.weights[self._symbol_of_rank] = np.diff(edges)

    def step(self, n_ticks: int, dt: float) -> Ticks:
        """Advance the market by ``dt`` seconds, returning the ``n_ticks`` trades in it.

        The ticks are spread evenly over the step; a symbol that ticks several times walks
        its path tick by tick.
        """
        if n_ticks < 0 or not dt >= 0:
            raise ValueError("need n_ticks >= 0 and dt >= 0")
        rng = self._rng
        start, self._now = self._now, self._now + dt
        idx = self._draw_symbols(rng.random(n_ticks))
        if n_ticks == 0:
            empty = np.empty(0)
            return Ticks(idx, empty, empty, empty, np.empty(0, np.int64))
        times = start + dt * (np.arange(1, n_ticks + 1) / n_ticks)

        # Group the ticks by symbol, in time order within a group (stable sort), and walk
        # each group from its symbol's current log-price with one segmented cumsum.
        order = np.argsort(idx, kind="stable")
        symbols = idx[order]
        t = times[order]
        first = np.empty(n_ticks, dtype=bool)
        first[0] = True
        np.not_equal(symbols[1:], symbols[:-1], out=first[1:])
        previous = np.empty(n_ticks)
        previous[1:] = t[:-1]
        previous[first] = self._last_tick_time[symbols[first]]
        variance = self._variance[symbols] * (t - previous)
        increments = np.sqrt(variance) * rng.standard_normal(n_ticks) - 0.5 * variance
        walked = np.cumsum(increments)
        starts = np.flatnonzero(first)
        lengths = np.diff(starts, append=n_ticks)
        walked -= np.repeat(walked[starts] - increments[starts], lengths)
        walked += self._log_ticks[symbols]
        ends = starts + lengths - 1
        self._log_ticks[symbols[ends]] = walked[ends]
        self._last_tick_time[symbols[ends]] = t[ends]

        log_ticks = np.empty(n_ticks)
        log_ticks[order] = walked
        ticks = np.maximum(np.rint(np.exp(log_ticks)), MIN_PRICE_TICKS).astype(np.int64)
        below, above = rng.integers(1, MAX_HALF_SPREAD + 1, (2, n_ticks))
        lots = rng.pareto(SIZE_TAIL, n_ticks).astype(np.int64) + 1
        size = LOT * np.minimum(lots, MAX_LOTS)
        return Ticks(
            idx,
            self.grid.price(ticks),
            self.grid.price(ticks - below),
            self.grid.price(ticks + above),
            size,
        )

    def _rank_cdf(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """P(rank < x - 1): the CDF of the power law on [1, n + 1)."""
        a, log_end = 1.0 - self.skew, math.log(self.n_symbols + 1)
        if a == 0:
            return np.log(x) / log_end
        return np.expm1(a * np.log(x)) / math.expm1(a * log_end)

    def _draw_symbols(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """Invert ``_rank_cdf`` at uniforms ``u`` (expm1/log1p keep skew near 1 exact)."""
        a, log_end = 1.0 - self.skew, math.log(self.n_symbols + 1)
        log_x = u * log_end if a == 0 else np.log1p(u * math.expm1(a * log_end)) / a
        ranks = np.exp(log_x).astype(np.intp) - 1
        return self._symbol_of_rank[np.minimum(ranks, self.n_symbols - 1)]
