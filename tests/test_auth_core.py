"""Tokens, entitlements, admission and the session's auth rules: pure, no sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ticker.core.admission import Admission, ConnectionLimits, Refusal
from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.core.entitlements import Entitlements, Principal
from ticker.core.session import Limits, Session
from ticker.core.tokens import TokenError, TokenVerifier, mint

SECRET = "s3cret-" * 10  # 70 bytes: long enough for HS512 too
NOW = 1_800_000_000.0


def verifier(**kw: Any) -> TokenVerifier:
    return TokenVerifier.from_secret(SECRET, clock=lambda: NOW, **kw)


def token(**claims: Any) -> str:
    body = {"sub": "alice", "exp": NOW + 60, "symbols": ["AAPL", "FX:*"], **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


# -- tokens ---------------------------------------------------------------------------


def test_a_good_token_gives_its_claims() -> None:
    p = verifier().verify(token(delay=900, max_conns=3))
    assert (p.sub, p.exp, p.delay_s, p.max_conns) == ("alice", NOW + 60, 900.0, 3)
    assert p.entitlements == Entitlements(["AAPL", "FX:*"])


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (jwt.encode({"sub": "a", "exp": NOW + 60}, "another-secret" * 3, "HS256"), "bad signature"),
        (token(exp=NOW - 1), "token expired"),
        (token(exp=NOW), "token expired"),
        (token(nbf=NOW + 30), "not yet valid"),
        (token(exp=None), "missing claim 'exp'"),
        (token(sub=None), "missing claim 'sub'"),
        (token(sub=""), "sub must be"),
        (token(symbols="AAPL"), "symbols must be a list"),
        (token(delay=-1), "delay must be"),
        (token(max_conns=0), "max_conns"),
        ("not.a.jwt", "invalid token"),
        ("x" * 9000, "1 to 8192"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(bad: str, why: str) -> None:
    with pytest.raises(TokenError, match=why):
        verifier().verify(bad)


def test_alg_none_is_refused() -> None:
    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "a", "exp": NOW + 60}) + "."
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verifier().verify(unsigned)
    # HS512 with the right secret: still not on the allow-list
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verifier().verify(jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET, "HS512"))


def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rs = TokenVerifier.from_public_key(pem, clock=lambda: NOW)
    assert rs.algorithms == ["RS256"]
    good = mint(key, algorithm="RS256", sub="a", symbols=["*"], ttl_s=60, now=NOW)
    assert rs.verify(good).entitlements.everything
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64({"sub": "a", "exp": NOW + 60, "symbols": ["*"]})
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="algorithm not allowed"):
        rs.verify(forged)


def test_es256_keys_verify_es256_only() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    es = TokenVerifier.from_public_key(pem, clock=lambda: NOW)
    assert es.algorithms == ["ES256"]
    assert es.verify(mint(key, algorithm="ES256", sub="b", symbols=[], ttl_s=5, now=NOW)).sub == "b"


def test_a_short_secret_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="32"):
        TokenVerifier.from_secret("short")


# -- entitlements -----------------------------------------------------------------------


def test_glob_patterns_are_case_sensitive_and_anchored() -> None:
    e = Entitlements(["AAPL", "FX:*", "EU?X", "[MN]SFT"])
    assert e.split(["AAPL", "AAPL2", "FX:EURUSD", "fx:eurusd", "EUAX", "MSFT", "NSFT", "OSFT"]) == (
        ["AAPL", "FX:EURUSD", "EUAX", "MSFT", "NSFT"],
        ["AAPL2", "fx:eurusd", "OSFT"],
    )
    assert not Entitlements([]).allows("AAPL")  # no symbols claim: nothing
    assert Entitlements(["*"]).everything


# -- admission --------------------------------------------------------------------------


def test_admission_counts_total_per_ip_and_per_subject() -> None:
    a = Admission(
        ConnectionLimits(max_connections=5, max_connections_per_ip=2, max_connections_per_subject=1)
    )
    assert a.admit("1.1.1.1", "alice") is None
    assert a.admit("1.1.1.2", "alice") is Refusal.TOO_MANY_FOR_SUBJECT
    assert a.admit("1.1.1.2", "bob", 2) is None and a.admit("1.1.1.3", "bob", 2) is None
    assert a.admit("1.1.1.1", "") is None
    assert a.admit("1.1.1.1", "") is Refusal.TOO_MANY_FOR_IP
    assert a.admit("1.1.1.5", "") is None
    assert a.admit("9.9.9.9", "") is Refusal.TOO_MANY_CONNECTIONS
    a.leave("1.1.1.1", "alice")
    assert a.admit("1.1.1.4", "alice") is None
    for ip, sub in [
        ("1.1.1.4", "alice"),
        ("1.1.1.2", "bob"),
        ("1.1.1.3", "bob"),
        ("1.1.1.1", ""),
        ("1.1.1.5", ""),
    ]:
        a.leave(ip, sub)
    assert (a.total, a.by_ip, a.by_subject) == (0, {}, {})  # nothing kept per gone client
    a = Admission(ConnectionLimits(max_handshakes=1))
    assert a.start_handshake() is None and a.start_handshake() is Refusal.TOO_MANY_HANDSHAKES


# -- the session ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    principal: Principal, authenticate: Any = None, **limits: Any
) -> tuple[Bus, Session, Clock]:
    bus = Bus(clock=lambda: 1_000, epoch="e1")
    bus.add_symbols(["AAPL", "MSFT", "FX:EURUSD", "FX:GBPUSD", "IBM"])
    bus.publish([{"s": s, "p": 1.0} for s in bus.symbols()])
    mono, wall = Clock(), Clock()
    wall.now = NOW
    session = Session(
        bus,
        limits=Limits(**limits),
        monotonic=mono,
        clock_us=lambda: int(wall.now * 1_000_000),
        session_id="s1",
        principal=principal,
        authenticate=authenticate,
    )
    session.take_control()
    WALL[session] = wall
    return bus, session, mono


def frames(session: Session) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in session.take_control()]


def send(session: Session, **op: Any) -> list[dict[str, Any]]:
    session.receive(orjson.dumps(op))
    return frames(session)


WALL: dict[Session, Clock] = {}
ALICE = Principal("alice", NOW + 60, Entitlements(["AAPL", "FX:*"]))


def test_subscribe_refuses_unentitled_symbols_and_subscribes_the_rest() -> None:
    bus, session, _ = make(ALICE)
    error, subscribed, snapshot = send(
        session, op="subscribe", symbols=["AAPL", "MSFT", "IBM"], id=1
    )
    assert error == {
        "type": "error",
        "id": 1,
        "code": "not_entitled",
        "message": "not entitled to: MSFT, IBM",
        "symbols": ["MSFT", "IBM"],
    }
    assert subscribed["symbols"] == ["AAPL"]
    assert [t["s"] for t in snapshot["ticks"]] == ["AAPL"]
    (error,) = send(session, op="subscribe", symbols=["MSFT"], id=2)
    assert error["code"] == "not_entitled"  # nothing entitled: no subscribed reply
    bus.publish([{"s": "MSFT", "p": 2.0}, {"s": "AAPL", "p": 2.0}])
    frame, _ = session.take_ticks()
    assert [t["s"] for t in orjson.loads(frame)["ticks"]] == ["AAPL"]


def test_star_list_and_unsubscribe_star_cover_only_entitled_symbols() -> None:
    bus, session, _ = make(ALICE)
    (symbols,) = send(session, op="list")
    assert symbols["symbols"] == ["AAPL", "FX:EURUSD", "FX:GBPUSD"]
    subscribed, snapshot = send(session, op="subscribe", symbols=["*"])
    assert subscribed["symbols"] == ["AAPL", "FX:EURUSD", "FX:GBPUSD"]
    assert sorted(t["s"] for t in snapshot["ticks"]) == ["AAPL", "FX:EURUSD", "FX:GBPUSD"]
    bus.publish([{"s": s, "p": 3.0} for s in bus.symbols()])
    frame, _ = session.take_ticks()
    assert sorted(t["s"] for t in orjson.loads(frame)["ticks"]) == [
        "AAPL",
        "FX:EURUSD",
        "FX:GBPUSD",
    ]
    (unsubscribed,) = send(session, op="unsubscribe", symbols=["*"])
    assert unsubscribed["symbols"] == []
    assert bus.subscriber_count() == 0


def test_expiry_closes_with_1008_and_an_in_band_refresh_extends_it() -> None:
    fresh = Principal("alice", NOW + 120, Entitlements(["FX:*"]))
    tokens = {"good": fresh, "other": Principal("mallory", NOW + 120, Entitlements(["*"]))}

    def authenticate(tok: str) -> Principal:
        from ticker.core.tokens import TokenError

        if tok not in tokens:
            raise TokenError("bad signature")
        return tokens[tok]

    _, session, _ = make(ALICE, authenticate)
    send(session, op="subscribe", symbols=["AAPL", "FX:EURUSD"])
    (error,) = send(session, op="auth", token="forged", id=1)
    assert (error["code"], error["message"]) == ("bad_token", "bad signature")
    (error,) = send(session, op="auth", token="other", id=2)
    assert error["code"] == "bad_token" and "same sub" in error["message"]
    unsubscribed, authenticated = send(session, op="auth", token="good", id=3)
    assert unsubscribed["symbols"] == ["FX:EURUSD"]  # AAPL is no longer entitled
    assert authenticated == {
        "type": "authenticated",
        "id": 3,
        "sub": "alice",
        "exp": NOW + 120,
        "symbols": ["FX:*"],
        "delay": 0.0,
    }
    WALL[session].now = NOW + 60
    session.check_deadlines()
    assert session.close_request is None  # the old exp no longer counts
    WALL[session].now = NOW + 120
    session.check_deadlines()
    assert session.close_request is not None
    assert (session.close_request.code, session.close_request.reason) == (
        CloseCode.POLICY,
        "token expired",
    )


def test_auth_op_without_auth_on_the_server_is_a_bad_request() -> None:
    _, session, _ = make(Principal())
    (error,) = send(session, op="auth", token="x", id=1)
    assert error["code"] == "bad_request" and "not enabled" in error["message"]
    session.check_deadlines()  # no exp: never expires
    assert session.close_request is None


def test_idle_timeout_closes_a_client_that_subscribes_to_nothing() -> None:
    _, session, mono = make(Principal(), idle_s=5)
    mono.now = 4.9
    session.check_deadlines()
    assert session.close_request is None
    mono.now = 5.0
    session.check_deadlines()
    assert session.close_request is not None and session.close_request.code == CloseCode.POLICY
    _, session, mono = make(Principal(), idle_s=5)
    send(session, op="subscribe", symbols=["AAPL"])
    mono.now = 50
    session.check_deadlines()
    assert session.close_request is None


def test_welcome_announces_the_token_and_the_limits() -> None:
    bus = Bus(epoch="e1")
    session = Session(
        bus,
        principal=ALICE,
        authenticate=lambda t: ALICE,
        limits=Limits(idle_s=3),
        welcome_limits={"max_connections": 9},
    )
    session.start(20)
    (welcome,) = frames(session)
    assert welcome["auth"] == {
        "sub": "alice",
        "exp": NOW + 60,
        "symbols": ["AAPL", "FX:*"],
        "delay": 0.0,
    }
    assert welcome["limits"]["idle_s"] == 3 and welcome["limits"]["max_connections"] == 9
