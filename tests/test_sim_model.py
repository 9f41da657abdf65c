"""The simulated market model: determinism, the tick grid, skew and the GBM scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feeds.sim.adapter import SimulatedFeed
from feeds.sim.model import (
    LOT,
    MAX_HALF_SPREAD,
    MAX_LOTS,
    TRADING_SECONDS_PER_YEAR,
    MarketModel,
    Ticks,
)
from feeds.sim.symbols import (
    REFERENCE_DATE,
    REFERENCE_PRICES,
    WELL_KNOWN,
    reference_prices,
    symbol_names,
)

STEPS = [(1, 0.01), (1000, 0.01), (0, 0.5), (5000, 1.0), (37, 0.001)]


def run(model: MarketModel) -> list[Ticks]:
    return [model.step(n, dt) for n, dt in STEPS]


def decimals(x: float) -> int:
    text = repr(x)
    return len(text.partition(".")[2]) if "e" not in text else 99


def test_same_seed_same_ticks() -> None:
    a, b = MarketModel(50, seed=7, skew=0.8), MarketModel(50, seed=7, skew=0.8)
    assert a.start_price.tolist() == b.start_price.tolist()
    assert a.volatility.tolist() == b.volatility.tolist()
    for x, y in zip(run(a), run(b), strict=True):
        for column_x, column_y in zip(x, y, strict=True):
            assert column_x.tolist() == column_y.tolist()


def test_different_seed_different_ticks() -> None:
    a, b = MarketModel(50, seed=7), MarketModel(50, seed=8)
    assert a.start_price.tolist() != b.start_price.tolist()
    x, y = a.step(1000, 0.01), b.step(1000, 0.01)
    assert x.idx.tolist() != y.idx.tolist()
    assert x.price.tolist() != y.price.tolist()


def test_step_shapes_and_types() -> None:
    model = MarketModel(10, seed=1)
    ticks = model.step(500, 0.01)
    assert all(len(column) == 500 for column in ticks)
    assert ticks.idx.min() >= 0
    assert ticks.idx.max() < 10
    assert {type(v) for v in ticks.price.tolist()} == {float}
    assert {type(v) for v in ticks.size.tolist()} == {int}
    assert all(len(column) == 0 for column in model.step(0, 1.0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prices_positive_on_the_tick_grid(seed: int) -> None:
    model = MarketModel(200, seed=seed, skew=1.0)
    for ticks in run(model):
        price, bid, ask = ticks.price, ticks.bid, ticks.ask
        assert (bid > 0).all()
        for column in (price, bid, ask):
            on_grid = np.rint(column / 0.01) * 0.01
            assert np.abs(on_grid - column).max(initial=0) < 1e-9
            assert max(map(decimals, column.tolist()), default=0) <= 2
        half_below = np.rint((price - bid) / 0.01)
        half_above = np.rint((ask - price) / 0.01)
        assert ((half_below >= 1) & (half_below <= MAX_HALF_SPREAD)).all()
        assert ((half_above >= 1) & (half_above <= MAX_HALF_SPREAD)).all()


def test_sizes_are_positive_round_lots() -> None:
    size = MarketModel(20, seed=4).step(100_000, 10.0).size
    assert size.dtype.kind == "i"
    assert (size >= LOT).all()
    assert (size % LOT == 0).all()
    assert size.max() <= LOT * MAX_LOTS
    lots = np.bincount(size // LOT)
    assert lots[1] > 100_000 / 2  # mostly single lots...
    assert size.max() >= 100 * LOT  # ...and a heavy tail of blocks


def test_coarser_tick_size() -> None:
    model = MarketModel(30, seed=5, tick_size=0.05)
    ticks = model.step(2000, 60.0)
    for column in (ticks.price, ticks.bid, ticks.ask):
        cents = np.rint(column * 100).astype(np.int64)
        assert np.abs(cents / 100 - column).max() < 1e-9
        assert (cents % 5 == 0).all()
        assert max(map(decimals, column.tolist())) <= 2


def test_tick_size_with_too_many_decimals_is_rejected() -> None:
    with pytest.raises(ValueError, match="decimals"):
        MarketModel(3, seed=1, tick_size=0.1 + 0.2)


def test_prices_stay_positive_when_crashing() -> None:
    # 800 % volatility over many years: log-prices wander far below one cent.
    model = MarketModel(5, seed=9, price_range=(0.05, 0.05), volatility_range=(8.0, 8.0))
    price = model.step(10_000, 20 * TRADING_SECONDS_PER_YEAR).price
    assert price.min() == pytest.approx(0.04)  # floored: the bid, 3 ticks lower, stays > 0


def test_start_prices_and_volatilities_in_range() -> None:
    model = MarketModel(1000, seed=11)
    assert 19.995 <= model.start_price.min() < 25
    assert 450 < model.start_price.max() <= 500.005
    assert 0.15 <= model.volatility.min() < 0.16
    assert 0.79 < model.volatility.max() <= 0.80


def test_uniform_when_no_skew() -> None:
    model = MarketModel(100, seed=3)
    assert model.weights == pytest.approx(np.full(100, 0.01))
    counts = np.bincount(model.step(100_000, 1.0).idx, minlength=100)
    # Each count is binomial(100000, 0.01): mean 1000, sd 31.5; 5 sd either side.
    assert counts.min() > 1000 - 160
    assert counts.max() < 1000 + 160


def test_skew_concentrates_ticks() -> None:
    model = MarketModel(100, seed=3, skew=1.2)
    assert model.weights.sum() == pytest.approx(1.0)
    counts = np.bincount(model.step(100_000, 1.0).idx, minlength=100)
    ranked = np.sort(counts)[::-1]
    assert ranked[0] > 50 * np.median(counts)
    assert ranked[:5].sum() > 0.4 * counts.sum()  # 5 % of the symbols, 40 % of the ticks
    assert np.abs(counts / counts.sum() - model.weights).max() < 0.005
    # Ranks are shuffled: the busiest symbol is not simply the first one.
    assert int(np.argmax(model.weights)) == int(np.argmax(counts)) != 0


def test_repeated_ticks_in_one_step_walk_the_path() -> None:
    # One symbol, 20 000 ticks spread over one trading year (two steps): consecutive log
    # returns have sd = vol * sqrt(1 / 20_000); a per-step (not per-tick) move would give
    # runs of equal prices instead.
    model = MarketModel(1, seed=2, price_range=(100, 100), volatility_range=(0.3, 0.3))
    half_year = TRADING_SECONDS_PER_YEAR / 2
    price = np.concatenate([model.step(10_000, half_year).price for _ in range(2)])
    returns = np.diff(np.log(price))
    assert np.std(returns) == pytest.approx(0.3 / math.sqrt(20_000), rel=0.03)
    assert np.count_nonzero(returns == 0) < 1000  # ~2 %: moves of under half a cent


@pytest.mark.parametrize("skew", [0.0, 1.2])
def test_variance_per_second_is_the_same_for_busy_and_quiet_symbols(skew: float) -> None:
    n_symbols, n_ticks, dt = 2000, 200_000, TRADING_SECONDS_PER_YEAR / 4
    model = MarketModel(n_symbols, seed=6, skew=skew)
    ticks = model.step(n_ticks, dt)
    # Ticks are evenly spaced in time: the i-th ends at (i + 1) / n_ticks of the step.
    last = np.full(n_symbols, -1)
    last[ticks.idx] = np.arange(n_ticks)  # the last write per symbol wins
    counts = np.bincount(ticks.idx, minlength=n_symbols)
    seen = last >= 0
    years = (last[seen] + 1) / n_ticks * dt / TRADING_SECONDS_PER_YEAR
    log_return = np.log(ticks.price[last[seen]] / model.start_price[seen])
    z = log_return / (model.volatility[seen] * np.sqrt(years))
    busy = counts[seen] >= np.quantile(counts[seen], 0.9)
    quiet = counts[seen] <= np.quantile(counts[seen], 0.5)
    assert np.std(z) == pytest.approx(1.0, abs=0.06)
    assert np.std(z[busy]) == pytest.approx(1.0, abs=0.15)
    assert np.std(z[quiet]) == pytest.approx(1.0, abs=0.1)


def test_symbol_names() -> None:
    assert symbol_names(3) == ["AAPL", "MSFT", "GOOGL"]
    assert len(WELL_KNOWN) == 50
    names = symbol_names(20_000)
    assert names[:50] == list(WELL_KNOWN)
    assert names[:500] == symbol_names(500)
    assert len(set(names)) == len(names)
    assert set(names[50:]).isdisjoint(WELL_KNOWN)
    assert all(name.isalpha() and name.isupper() and len(name) <= 8 for name in names)
    assert symbol_names(0) == []

    assert symbol_names(12_000) == symbol_names(12_000)


def test_start_prices_fix_some_symbols_whatever_the_seed() -> None:
    fixed = [250.0, None, 26.5]
    a, b = (MarketModel(5, seed=s, start_prices=fixed) for s in (1, 2))
    assert a.start_price[[0, 2]].tolist() == b.start_price[[0, 2]].tolist() == [250.0, 26.5]
    drawn = MarketModel(5, seed=1)  # the others: the same draws as without start_prices
    assert a.start_price[[1, 3, 4]].tolist() == drawn.start_price[[1, 3, 4]].tolist()
    assert a.volatility.tolist() == drawn.volatility.tolist()
    for bad in ([1.0] * 6, [0.0], [math.nan]):
        with pytest.raises(ValueError, match="start_prices"):
            MarketModel(5, seed=1, start_prices=bad)


def test_real_tickers_start_at_their_reference_price() -> None:
    assert set(REFERENCE_PRICES) == set(WELL_KNOWN) and REFERENCE_DATE
    names = symbol_names(60)
    prices = reference_prices(names)
    assert prices[:2] == [REFERENCE_PRICES["AAPL"], REFERENCE_PRICES["MSFT"]]
    assert prices[50:] == [None] * 10  # made-up names are drawn
    starts = [SimulatedFeed(60, seed=seed).model.start_price for seed in (None, 1, 2)]
    for start in starts:
        assert start[:50].tolist() == [REFERENCE_PRICES[n] for n in WELL_KNOWN]
    assert starts[1][50:].tolist() != starts[2][50:].tolist()
