"""A simulated market: a feed that needs no network, for demos, load tests and tests."""

from feeds.sim.adapter import SimulatedFeed
from feeds.sim.model import MarketModel
from feeds.sim.symbols import symbol_names

__all__ = ["MarketModel", "SimulatedFeed", "symbol_names"]
