"""JSON Web Tokens: verify one (at the handshake or in band) and mint one (``ticker token``).

The algorithm allow-list is fixed by the key the server holds, never read from the token:
a shared secret verifies HS256 only, an RSA public key RS256 only, an EC key ES256 only.
``alg: none`` and algorithm confusion (an HS256 token "signed" with the public key) fail.
Time checks use an injected clock, the same one that closes expired sessions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ticker.core.entitlements import MAX_SUBJECT_LENGTH, Entitlements, Principal, TokenError
from ticker.core.protocol import MAX_TOKEN_LENGTH

MAX_DELAY_S = 86_400.0
MIN_SECRET_LENGTH = 32
"""Shorter HS256 secrets are guessable offline from one token (RFC 7518 section 3.2)."""


__all__ = ["TokenError", "TokenVerifier", "check_secret", "mint"]


def check_secret(secret: str) -> bytes:
    """The secret as the HMAC key, or ValueError: one rule for the server and for minting,
    so ``ticker token`` never mints a token the server would refuse to verify."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the HS256 secret must be at least {MIN_SECRET_LENGTH} characters "
            f"(this one has {len(secret)})"
        )
    return secret.encode()


class TokenVerifier:
    """Verifies tokens against one key with a fixed algorithm allow-list."""

    def __init__(
        self,
        key: Any,
        algorithms: Sequence[str],
        *,
        leeway_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.algorithms = list(algorithms)
        self.leeway_s = leeway_s
        self.clock = clock

    @classmethod
    def from_secret(cls, secret: str, **kw: Any) -> TokenVerifier:
        """HS256 with a shared secret; ValueError when it is too short to be safe."""
        return cls(check_secret(secret), ["HS256"], **kw)

    @classmethod
    def from_public_key(cls, pem: bytes, **kw: Any) -> TokenVerifier:
        """RS256 or ES256, chosen by the key: a token cannot pick it."""
        key = load_pem_public_key(pem)
        if isinstance(key, rsa.RSAPublicKey):
            return cls(key, ["RS256"], **kw)
        if isinstance(key, ec.EllipticCurvePublicKey):
            return cls(key, ["ES256"], **kw)
        raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")

    def verify(self, token: str) -> Principal:
        """The token's principal; TokenError, with the reason, if it is not valid."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError(f"the token must be 1 to {MAX_TOKEN_LENGTH} characters")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self.algorithms,
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                },
            )
        except jwt.InvalidAlgorithmError:
            raise TokenError(
                f"algorithm not allowed (allowed: {', '.join(self.algorithms)})"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        now = self.clock()
        exp = _number(claims, "exp")
        if exp is None or now >= exp + self.leeway_s:
            raise TokenError("token expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and now < nbf - self.leeway_s:
            raise TokenError("token not yet valid")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_LENGTH:
            raise TokenError(f"sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
        entitlements = _patterns(claims, "symbols") or Entitlements([])
        publish = _patterns(claims, "pub")
        delay = _number(claims, "delay") or 0.0
        if not 0 <= delay <= MAX_DELAY_S:
            raise TokenError(f"delay must be 0 to {MAX_DELAY_S:g} seconds")
        max_conns = claims.get("max_conns")
        if max_conns is not None and (
            isinstance(max_conns, bool) or not isinstance(max_conns, int) or max_conns < 1
        ):
            raise TokenError("max_conns must be a positive integer")
        return Principal(sub, exp, entitlements, float(delay), max_conns, publish)


def _patterns(claims: dict[str, Any], name: str) -> Entitlements | None:
    patterns = claims.get(name)
    if patterns is None:
        return None
    if not isinstance(patterns, list):
        raise TokenError(f"{name} must be a list of patterns")
    try:
        return Entitlements(patterns)
    except ValueError as exc:
        raise TokenError(f"{name}: {exc}") from None


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(f"{name} must be a number")
    return float(value)


def mint(
    key: Any,
    *,
    algorithm: str = "HS256",
    sub: str,
    symbols: Sequence[str],
    ttl_s: float,
    delay_s: float = 0.0,
    max_conns: int | None = None,
    publish: Sequence[str] | None = None,
    now: float | None = None,
) -> str:
    """A signed token with the claims the server reads (for tests and operators)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": issued,
        "exp": issued + math.ceil(ttl_s),
        "symbols": list(symbols),
    }
    if delay_s:
        claims["delay"] = delay_s
    if max_conns is not None:
        claims["max_conns"] = max_conns
    if publish is not None:
        claims["pub"] = list(publish)
    return jwt.encode(claims, key, algorithm=algorithm)
