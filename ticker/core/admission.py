"""Connection limits at the handshake: how many at once in all, per token subject, per IP.

Pure counting, so every transport's handshake asks the same ``Admission`` and a refused
client costs no upgrade. A limit of 0 means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ticker.core.codes import Refusal


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How many connections at once, in all, per IP, per subject (0: no limit)."""

    max_connections: int = 10_000
    max_connections_per_ip: int = 0
    """0: no limit (behind a proxy every client has its address)."""
    max_connections_per_subject: int = 16
    """For authenticated clients; a token's ``max_conns`` claim overrides it."""
    max_handshakes: int = 128

    def as_dict(self) -> dict[str, int]:
        """The limits the welcome frame tells a client about."""
        return {
            "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_connections_per_ip,
            "max_connections_per_subject": self.max_connections_per_subject,
        }


class Admission:
    """Counts open connections; ``admit`` takes a slot or says why not, ``leave`` frees it."""

    __slots__ = ("by_ip", "by_subject", "handshakes", "limits", "total")

    def __init__(self, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.limits = limits
        self.total = 0
        self.handshakes = 0
        self.by_ip: dict[str, int] = {}
        self.by_subject: dict[str, int] = {}

    def start_handshake(self) -> Refusal | None:
        """Take a handshake slot: a flood of slow handshakes is refused early."""
        limit = self.limits.max_handshakes
        if limit and self.handshakes >= limit:
            return Refusal.TOO_MANY_HANDSHAKES
        self.handshakes += 1
        return None

    def end_handshake(self) -> None:
        """Give the handshake slot back, whatever the handshake's outcome."""
        self.handshakes -= 1

    def admit(self, ip: str, subject: str, subject_max: int | None = None) -> Refusal | None:
        """Take a connection slot for this address and subject ("" when auth is off)."""
        limits = self.limits
        if limits.max_connections and self.total >= limits.max_connections:
            return Refusal.TOO_MANY_CONNECTIONS
        per_ip = limits.max_connections_per_ip
        if per_ip and self.by_ip.get(ip, 0) >= per_ip:
            return Refusal.TOO_MANY_FOR_IP
        if subject:
            per_subject = subject_max or limits.max_connections_per_subject
            if per_subject and self.by_subject.get(subject, 0) >= per_subject:
                return Refusal.TOO_MANY_FOR_SUBJECT
            self.by_subject[subject] = self.by_subject.get(subject, 0) + 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        self.total += 1
        return None

    def leave(self, ip: str, subject: str) -> None:
        """Give back the slot ``admit`` took, when the connection ends."""
        self.total -= 1
        _decrement(self.by_ip, ip)
        if subject:
            _decrement(self.by_subject, subject)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]  # the maps hold only keys with open connections: bounded by them
