"""One ``/metrics`` for a node of several processes (``ticker serve --workers N``).

Each process renders its own registry; ``merge`` parses the texts and renders them as
one, every sample labelled with the process it came from (``worker="0"``... and
``worker="feed"``), so each family is declared once and ``sum without (worker)`` gives
the node's figure. A sample that names its worker already keeps its label.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

LABEL = "worker"


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """(worker label, its exposition) of each process, as one exposition."""
    families: dict[str, Metric] = {}
    for worker, text in parts:
        for family in text_string_to_metric_families(text.decode()):
            kept = families.get(family.name)
            if kept is None:
                kept = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            kept.samples += [
                s if LABEL in s.labels else Sample(s.name, {**s.labels, LABEL: worker}, *s[2:])
                for s in family.samples
            ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
