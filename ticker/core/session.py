"""One client session, independent of the transport that carries it.

The session owns the client's subscriptions, its mailbox and its outbox of control frames
(replies, snapshots, errors). A transport feeds it what the client sent and asks it what
to write next; the session never touches a socket, a loop or a clock of its own.

Order on the wire: control frames go before tick frames, which is what makes a snapshot
arrive before the first live tick of its symbol.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ticker.core import protocol
from ticker.core.bus import WILDCARD, Bus
from ticker.core.codes import CloseCode, ErrorCode
from ticker.core.entitlements import ANONYMOUS, Principal, TokenError
from ticker.core.mailbox import MAX_FRAME_BYTES, ConflatingMailbox, Mailbox, QueueMailbox
from ticker.core.protocol import Op, ProtocolError
from ticker.core.ratelimit import TokenBucket
from ticker.core.status import SymbolStatus
from ticker.core.ticks import MicrosClock, now_us
from ticker.core.topics import DerivedTopic, TopicError, TopicKind, TopicKinds, base_of, is_derived

MODES = ("conflate", "all")
REPLAY_OPS = ("replay", "replay_control", "list_replays")


class ReplayHost(Protocol):
    """What a session hands its replay ops to (``ticker/server/replays.py``).

    Declared here, beside its one caller, so the core needs nothing of the replay code
    above it: the host depends on the session, never the other way round.
    """

    def handle(self, session: Session, op: Op) -> None:
        """Answer one replay op (``REPLAY_OPS``) of this session."""
        ...

    def stop(self, session: Session) -> None:
        """Forget this session's replay, loading or running (the session is closing)."""
        ...

    def busy(self, session: Session) -> bool:
        """A replay is loading or running for this session."""
        ...


class PendingFrames(Protocol):
    """Frames a derived host holds for one client until it is written to (a book
    topic's changes, merged per level while the client reads slowly)."""

    def take(self) -> list[bytes]:
        """The frames to write now (none is fine)."""
        ...


class DerivedHost(Protocol):
    """What serves one kind of derived topic (``SYMBOL@1m``: ``ticker/server/candles.py``).

    Declared here like ``ReplayHost``: the session parses and entitles the topic by its
    base symbol, counts it against ``max_symbols`` and answers ``subscribed``; the host
    then queues the topic's first frame and, later, its updates (``send_control``).
    """

    kind: TopicKind
    max_history: int
    """The most ``history`` a subscribe may ask of this kind (0: it keeps none)."""

    def follow(self, session: Session, topics: list[DerivedTopic], history: int) -> None:
        """Start sending these topics to the session: first frame now, updates later."""
        ...

    def unfollow(self, session: Session, topics: list[DerivedTopic]) -> None:
        """Send the session nothing more of these topics."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Everything a client controls is bounded by one of these; all are in the welcome."""

    max_symbols: int = 1000
    max_message_bytes: int = 64 * 1024
    ops_per_s: int = 20
    queue_bytes: int = 1024 * 1024
    idle_s: float = 0.0
    """Close (1008) a client that has subscribed to nothing this long after it connected;
    0: never."""

    def as_dict(self) -> dict[str, float]:
        """The limits the welcome frame tells a client about (``idle_s`` when on)."""
        limits: dict[str, float] = {
            "max_symbols": self.max_symbols,
            "max_message_bytes": self.max_message_bytes,
            "ops_per_s": self.ops_per_s,
            "queue_bytes": self.queue_bytes,
        }
        if self.idle_s:
            limits["idle_s"] = self.idle_s
        return limits


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """The close code and reason a session asked for, kept until the transport
    closes: the session itself never touches a socket."""

    code: int
    reason: str


def _chunks(encoded: list[bytes], max_bytes: int = MAX_FRAME_BYTES) -> Iterable[list[bytes]]:
    """Split pre-encoded ticks into runs of at most ``max_bytes`` (at least one tick each)."""
    run: list[bytes] = []
    size = 0
    for item in encoded:
        if run and size + len(item) > max_bytes:
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item)
    if run:
        yield run


def _by_kind(topics: list[DerivedTopic]) -> dict[str, list[DerivedTopic]]:
    by_kind: dict[str, list[DerivedTopic]] = {}
    for topic in topics:
        by_kind.setdefault(topic.kind, []).append(topic)
    return by_kind


class Session:
    """State of one connected client; see the module docstring for the contract."""

    __slots__ = (
        "_authenticate",
        "_bucket",
        "_clock_us",
        "_monotonic",
        "_opened",
        "_outbox",
        "_outbox_bytes",
        "_pending",
        "_strikes",
        "_wake",
        "bus",
        "close_request",
        "derived",
        "derived_hosts",
        "errors",
        "id",
        "limits",
        "mailbox",
        "principal",
        "replays",
        "subscriptions",
        "welcome_limits",
    )

    def __init__(
        self,
        bus: Bus,
        *,
        mode: str = "conflate",
        limits: Limits = Limits(),
        wake: Callable[[], None] = lambda: None,
        clock_us: MicrosClock = now_us,
        monotonic: Callable[[], float] = time.monotonic,
        session_id: str | None = None,
        error_counts: dict[str, int] | None = None,
        replays: ReplayHost | None = None,
        principal: Principal = ANONYMOUS,
        authenticate: Callable[[str], Principal] | None = None,
        welcome_limits: dict[str, int] | None = None,
        derived: Mapping[str, DerivedHost] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.id = session_id or secrets.token_hex(8)
        self.bus = bus
        self.limits = limits
        self._wake = wake
        self._clock_us = clock_us
        self.mailbox: Mailbox = (
            QueueMailbox(limits.queue_bytes, self._on_queue_ready)
            if mode == "all"
            else ConflatingMailbox(wake)
        )
        self.subscriptions: set[str] = set()
        """The symbols followed ("*" included); derived topics are in ``derived``."""
        self.derived: dict[str, DerivedTopic] = {}
        """The derived topics followed, by name (``AAPL@1m``)."""
        self.derived_hosts: Mapping[str, DerivedHost] = derived or {}
        """Who serves each kind of derived topic (by kind name); empty: none served."""
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._pending: dict[PendingFrames, None] = {}
        """Hosts' frames waiting for this client, taken after the outbox (in order)."""
        self._bucket = TokenBucket(limits.ops_per_s, limits.ops_per_s, clock=monotonic)
        self._strikes = 0
        self.close_request: CloseRequest | None = None
        self.errors: dict[str, int] = {} if error_counts is None else error_counts
        """Error frames sent, by code (for metrics; may be shared by many sessions)."""
        self.replays = replays
        """Where the replay ops go (``--replay-dir``); None: replays are not enabled."""
        self.principal = principal
        """Who the client is: its entitlements, delay and token expiry (auth off: anyone)."""
        self._authenticate = authenticate
        """Verifies an in-band ``auth`` token; None: auth is off on this server."""
        self.welcome_limits = welcome_limits or {}
        """The transport's own limits (connections, handshakes), announced with ours."""
        self._monotonic = monotonic
        self._opened = monotonic()

    @property
    def mode(self) -> str:
        """``latest`` or ``all``: which mailbox the client chose."""
        return self.mailbox.mode

    # -- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        heartbeat_s: float,
        symbols: list[str] | None = None,
        resume: tuple[str, dict[str, int]] | None = None,
    ) -> None:
        """Queue the welcome, and subscribe to the symbols asked for at connect time
        (``resume``: the epoch and ``since`` of a reconnecting client)."""
        self._send(
            protocol.welcome(
                session=self.id,
                epoch=self.bus.epoch,
                mode=self.mode,
                heartbeat_s=heartbeat_s,
                server_time=self._clock_us(),
                limits={**self.limits.as_dict(), **self.welcome_limits},
                auth=None if self._authenticate is None else self.principal.describe(),
            )
        )
        self.bus.status.listen(self)
        if symbols:
            args = {"epoch": resume[0], "since": resume[1]} if resume else {}
            self._run(Op("subscribe", None, list(dict.fromkeys(symbols)), args))

    def end(self) -> None:
        """Leave every topic and drop what is pending; the session is then inert."""
        if self.replays is not None:
            self.replays.stop(self)
        self.bus.status.leave(self)
        self.bus.unsubscribe(self.mailbox, self._registered())
        self._unfollow(list(self.derived.values()))
        self.subscriptions.clear()
        self.mailbox.clear()
        self._outbox.clear()
        self._outbox_bytes = 0
        self._pending.clear()

    def request_close(self, code: int, reason: str) -> None:
        """Ask the transport to close. Pending ticks are dropped now; the session stays on
        the bus until ``end()`` (this may run inside a publish, which must not see its
        subscriber sets change), its mailbox bounded as ever."""
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
            self.mailbox.clear()
        self._wake()

    def check_deadlines(self) -> None:
        """Close at the token's expiry (1008), or when idle past ``idle_s`` with nothing
        subscribed; the transport calls this about once a second."""
        if self.close_request is not None:
            return
        exp = self.principal.exp
        if exp is not None and self._clock_us() >= exp * 1_000_000:
            self.request_close(CloseCode.POLICY, "token expired")
        idle_s = self.limits.idle_s
        if (
            idle_s
            and not self.subscriptions
            and not self.derived
            and self._monotonic() - self._opened >= idle_s
            and not (self.replays is not None and self.replays.busy(self))
        ):
            self.request_close(CloseCode.POLICY, f"idle: nothing subscribed in {idle_s:g} s")

    # -- what the client sent -------------------------------------------------------------

    def receive(self, data: bytes | str, op_name: str | None = None) -> None:
        """Handle one text frame (or the body of an op named ``op_name``, over HTTP).
        Errors become error frames; nothing here raises."""
        if not self._admit():
            return
        try:
            self._run(protocol.parse(data, op_name))
        except ProtocolError as exc:
            self._error(exc)

    def receive_binary(self) -> None:
        """Binary frames get an error frame, counted against the ops limit like any op."""
        if self._admit():
            self._error(
                ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted; send text")
            )

    def _admit(self) -> bool:
        """The ops-per-second limit: an error frame while over it, a close if it goes on."""
        if self.close_request is not None:
            return False
        if self._bucket.take():
            self._strikes = 0
            return True
        self._strikes += 1
        if self._strikes > self.limits.ops_per_s:
            self.request_close(CloseCode.RATE_LIMITED, "rate limited: too many operations")
        else:
            self._error(
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"over {self.limits.ops_per_s} operations per second; slow down",
                )
            )
        return False

    def _run(self, op: Op) -> None:
        if op.op == "subscribe":
            self._subscribe(op)
        elif op.op == "unsubscribe":
            self._unsubscribe(op)
        elif op.op == "ping":
            self._send(protocol.pong(self._clock_us(), op.id))
        elif op.op == "list":
            symbols = self.principal.entitlements.filter(self.bus.symbols())
            self._send(protocol.symbols_list(symbols, op.id))
        elif op.op in REPLAY_OPS:
            if self.replays is None:
                message = "replays are not enabled on this server (it has no --replay-dir)"
                self._error(ProtocolError(ErrorCode.UNKNOWN_SOURCE, message, id=op.id))
            elif (entitled := self._entitled(op)) is not None:
                self.replays.handle(self, entitled)
        elif op.op == "auth":
            self._refresh(op)

    def _entitled(self, op: Op) -> Op | None:
        """The op with only the symbols the token allows ("*" expanded to them when the
        token has patterns); a ``not_entitled`` error names the rest. None: nothing left."""
        entitlements = self.principal.entitlements
        if entitlements.everything or not op.symbols:
            return op
        named = [s for s in op.symbols if s != WILDCARD]
        allowed, refused = entitlements.split(named)
        if WILDCARD in op.symbols:
            chosen = set(allowed)
            allowed += [s for s in entitlements.filter(self.bus.symbols()) if s not in chosen]
        if refused:
            self._error(
                ProtocolError(
                    ErrorCode.NOT_ENTITLED,
                    f"not entitled to: {', '.join(refused)}",
                    id=op.id,
                    symbols=refused,
                )
            )
            if not allowed:
                return None
        return Op(op.op, op.id, allowed, op.args)

    def _refresh(self, op: Op) -> None:
        """In-band ``auth``: a fresh token for the same subject and delay extends the
        session; entitlements follow the new token (symbols it no longer allows are
        unsubscribed)."""
        if self._authenticate is None:
            message = "authentication is not enabled on this server"
            self._error(ProtocolError(ErrorCode.BAD_REQUEST, message, id=op.id))
            return
        try:
            principal = self._authenticate(op.args["token"])
        except TokenError as exc:
            self._error(ProtocolError(ErrorCode.BAD_TOKEN, str(exc), id=op.id))
            return
        old = self.principal
        if principal.sub != old.sub or principal.delay_s != old.delay_s:
            message = "a refreshed token must have the same sub and delay; reconnect instead"
            self._error(ProtocolError(ErrorCode.BAD_TOKEN, message, id=op.id))
            return
        self.principal = principal
        followed = [*self.subscriptions, *self.derived]
        lost = [s for s in followed if not principal.entitlements.allows(s)]
        if lost:
            self._unsubscribe(Op("unsubscribe", None, sorted(lost)))
        self._send(protocol.authenticated(principal.describe(), op.id))

    def _registered(self) -> list[str]:
        """The topics this mailbox is on in the bus: "*" alone covers every symbol."""
        return [WILDCARD] if WILDCARD in self.subscriptions else list(self.subscriptions)

    def _subscribe(self, op: Op) -> None:
        entitled = self._entitled(op)
        if entitled is None:
            return
        op = entitled
        derived = self._parse_derived(op)
        if derived is None:
            return
        bus = self.bus
        unknown = [s for s in op.symbols if s != WILDCARD and not bus.known(base_of(s))]
        wanted = [
            s
            for s in op.symbols
            if s not in unknown and s not in self.subscriptions and not is_derived(s)
        ]
        following = [t for t in derived if t.name not in unknown and t.name not in self.derived]
        followed = len(self.subscriptions) + len(self.derived)
        if followed + len(wanted) + len(following) > self.limits.max_symbols:
            self._error(
                ProtocolError(
                    ErrorCode.TOO_MANY_SYMBOLS,
                    f"at most {self.limits.max_symbols} symbols per connection; "
                    f"{followed} subscribed, {len(wanted) + len(following)} more asked",
                    id=op.id,
                )
            )
            return
        if unknown:
            self._error(
                ProtocolError(
                    ErrorCode.UNKNOWN_SYMBOL,
                    f"unknown symbol(s): {', '.join(unknown)}",
                    id=op.id,
                    symbols=unknown,
                )
            )
        if not wanted and not following and unknown:
            return
        fresh: list[str] = []  # symbols that start streaming now, hence need a snapshot
        if WILDCARD in self.subscriptions:
            pass  # already receiving every symbol: nothing new to register or snapshot
        elif WILDCARD in wanted:
            bus.unsubscribe(self.mailbox, self.subscriptions)
            bus.subscribe(self.mailbox, [WILDCARD])
            fresh = [s for s in bus.symbols() if s not in self.subscriptions]
        elif wanted:
            bus.subscribe(self.mailbox, wanted)
            fresh = wanted
        resume = "since" in op.args
        recovered, missed = self._recover(fresh, op.args) if resume else (None, [])
        snapshot = bus.snapshot(
            fresh if recovered is None else [s for s in fresh if not recovered.get(s)]
        )
        self.subscriptions.update(wanted)
        self.derived.update((t.name, t) for t in following)
        self._send(protocol.subscription("subscribed", self._followed(), op.id, recovered))
        for run in _chunks(snapshot):
            self._send(protocol.snapshot(run))
        for run in _chunks(missed):  # control frames: before any live tick
            self._send(protocol.ticks(run))
        self._send_status(bus.status.not_live(fresh))
        for kind, topics in _by_kind(following).items():
            self.derived_hosts[kind].follow(self, topics, op.args.get("history", 0))

    def _followed(self) -> list[str]:
        """Every topic followed, as ``subscribed`` and ``unsubscribed`` list them."""
        return sorted([*self.subscriptions, *self.derived])

    def _parse_derived(self, op: Op) -> list[DerivedTopic] | None:
        """The derived topics an op names, or None after an error frame: a topic no
        served kind takes, a delayed token (derived topics are live), a ``history`` over
        the bound. Any of these refuses the whole op."""
        names = [s for s in op.symbols if is_derived(s)]
        if not names:
            return []
        hosts = self.derived_hosts
        problem = None
        topics: list[DerivedTopic] = []
        if not hosts:
            problem = "this server serves no derived topics (SYMBOL@SUFFIX)"
        elif self.principal.delay_s:
            message = "derived topics are live data; a token with a delay gets none"
            self._error(ProtocolError(ErrorCode.NOT_ENTITLED, message, id=op.id, symbols=names))
            return None
        else:
            try:
                kinds = TopicKinds(host.kind for host in hosts.values())
                topics = [kinds.parse(name) for name in names]
            except TopicError as exc:
                problem = str(exc)
        history = op.args.get("history", 0)
        for kind in {t.kind for t in topics}:  # a kind that keeps none (books) ignores it
            if 0 < (bound := hosts[kind].max_history) < history:
                problem = f"history is at most {bound} bars per topic of kind {kind}"
        if problem is not None:
            self._error(ProtocolError(ErrorCode.BAD_REQUEST, problem, id=op.id))
            return None
        return topics

    def _unfollow(self, topics: list[DerivedTopic]) -> None:
        for kind, ours in _by_kind(topics).items():
            self.derived_hosts[kind].unfollow(self, ours)
        for topic in topics:
            self.derived.pop(topic.name, None)

    def _recover(
        self, fresh: list[str], args: dict[str, Any]
    ) -> tuple[dict[str, bool], list[bytes]]:
        """Resume (``since``): each fresh symbol named in it gets every tick it missed from
        the history, or none and a snapshot. All of them must fit in half the client's
        ``queue_bytes`` (so a resume never makes it a slow consumer); what does not fit is
        not recovered."""
        since: dict[str, int] = args["since"]
        same_stream = args["epoch"] == self.bus.epoch
        budget = self.limits.queue_bytes // 2
        recovered: dict[str, bool] = {}
        missed: list[bytes] = []
        for symbol in fresh:
            if symbol not in since:
                continue
            ticks = self.bus.missed(symbol, since[symbol]) if same_stream else None
            size = sum(map(len, ticks)) + len(ticks) if ticks else 0
            recovered[symbol] = ticks is not None and size <= budget
            if ticks and recovered[symbol]:
                budget -= size
                missed += ticks
        return recovered, missed

    def _unsubscribe(self, op: Op) -> None:
        bus = self.bus
        self._unfollow([self.derived[s] for s in op.symbols if s in self.derived])
        leaving = [s for s in op.symbols if s in self.subscriptions]
        if WILDCARD in op.symbols and not self.principal.entitlements.everything:
            leaving = list(self.subscriptions)  # its "*" was expanded to the entitled symbols
        had_wildcard = WILDCARD in self.subscriptions
        self.subscriptions.difference_update(leaving)
        if had_wildcard and WILDCARD in leaving:
            bus.unsubscribe(self.mailbox, [WILDCARD])
            bus.subscribe(self.mailbox, self.subscriptions)  # continuing streams: no snapshot
            self.mailbox.discard(s for s in bus.symbols() if s not in self.subscriptions)
        elif not had_wildcard:
            bus.unsubscribe(self.mailbox, leaving)
            self.mailbox.discard(leaving)
        self._send(protocol.subscription("unsubscribed", self._followed(), op.id))

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        """Symbols changed status (``ticker/core/status.py``): tell the client of those it
        follows, ``live`` again included."""
        if WILDCARD not in self.subscriptions:
            changes = {s: st for s, st in changes.items() if s in self.subscriptions}
        self._send_status(changes)

    def _send_status(self, statuses: dict[str, SymbolStatus]) -> None:
        if statuses and self.close_request is None:
            self._send(protocol.status({s: st.to_json() for s, st in statuses.items()}))

    # -- what to write next ---------------------------------------------------------------

    def send_control(self, frame: bytes) -> None:
        """Queue a reply built elsewhere (the replay host's)."""
        self._send(frame)

    def frames_ready(self, pending: PendingFrames) -> None:
        """A host holds frames for this client in ``pending``: they are taken when the
        client is next written to (after the outbox), so while it is backed up they
        stay merging there instead of queueing here."""
        self._pending[pending] = None
        self._wake()

    def forget_frames(self, pending: PendingFrames) -> None:
        """A topic was left: what ``pending`` holds is not to be written."""
        self._pending.pop(pending, None)

    def send_error(self, exc: ProtocolError) -> None:
        """Queue an error frame built elsewhere (the replay host's)."""
        self._error(exc)

    def _send(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._wake()

    def heartbeat(self) -> None:
        """Queue a heartbeat frame: browsers cannot see WebSocket pings."""
        self._send(protocol.heartbeat(self._clock_us()))

    def _error(self, exc: ProtocolError) -> None:
        self.errors[exc.code] = self.errors.get(exc.code, 0) + 1
        self._send(exc.frame())

    def take_control(self) -> list[bytes]:
        """Control frames (replies, snapshots, errors) in order; they go before ticks."""
        frames, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        if self._pending:
            pending, self._pending = self._pending, {}
            for source in pending:
                frames += source.take()
        return frames

    def backed_up(self) -> None:
        """The transport says the client is not reading: bound the replies piling up.

        A client that keeps sending while it reads nothing would grow the outbox; past
        the bound it is a slow consumer (4008). Only checked while the socket is backed
        up, so one op's replies (a big snapshot) always go out.
        """
        if self._outbox_bytes > max(self.limits.queue_bytes, MAX_FRAME_BYTES * 2):
            self.request_close(CloseCode.SLOW_CONSUMER, "slow consumer: replies not read")

    def has_control(self) -> bool:
        """Whether replies are waiting: the transport writes them before ticks."""
        return bool(self._outbox) or bool(self._pending)

    def has_ticks(self) -> bool:
        """Whether ticks are waiting, so the transport knows to flush again."""
        return len(self.mailbox) > 0

    def take_ticks(self, positions: dict[str, int] | None = None) -> tuple[bytes, int]:
        """One ``ticks`` frame and the number of ticks in it; in mode ``all``,
        ``positions`` (if given) gets the ``q`` of the last tick taken of each symbol."""
        mailbox = self.mailbox
        if positions is not None and isinstance(mailbox, QueueMailbox):
            segments, count = mailbox.drain(positions=positions)
        else:
            segments, count = mailbox.drain()
        return protocol.ticks(segments), count

    def _on_queue_ready(self) -> None:
        """Mode ``all``: a queue past its byte bound is a slow consumer, closed with 4008."""
        if self.mailbox.overflowed:
            self.request_close(
                CloseCode.SLOW_CONSUMER,
                f"slow consumer: queue over {self.limits.queue_bytes} bytes",
            )
        else:
            self._wake()
