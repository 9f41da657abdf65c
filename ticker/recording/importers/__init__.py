"""Importers of public market-data formats: each turns one file into a ``TickTable``."""
