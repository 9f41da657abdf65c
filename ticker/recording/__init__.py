"""Recorded ticks at rest: the tick table, the native formats (JSON Lines, columnar numpy),
the importers of public formats, and the writers that record a live stream.

Everything here is pure and synchronous: files in, ``TickTable`` out, and back.
"""
