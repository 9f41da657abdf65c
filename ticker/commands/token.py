"""``ticker token``: mint a JWT the server accepts, for tests and for operators.

Signed with ``--secret`` (HS256) or ``--private-key`` (a PEM key: RSA signs RS256, EC
P-256 ES256). The token goes to stdout and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ticker.commands.envparser import Commands
from ticker.commands.security import SECRET_ENV

DEFAULT_TTL_S = 3600.0


def add_parser(commands: Commands) -> None:
    """``token --sub ...``: mint the JWT ``ticker serve`` reads, HS256 or a PEM key."""
    parser = commands.add_parser(
        "token",
        help="mint an access token (JWT) for a ticker server",
        description="Mint a JWT with the claims ticker serve reads (sub, exp, symbols, "
        "pub, delay, max_conns) and print it.",
    )
    add = parser.add_option
    parser.add_argument(
        "--secret",
        default=os.environ.get(SECRET_ENV) or None,
        help=f"HS256 secret (the server's --auth-secret) [env {SECRET_ENV}]",
    )
    add("--private-key", type=Path, default=None, help="PEM private key (RS256 or ES256)")
    parser.add_argument("--sub", required=True, help="the subject: who the token is for")
    parser.add_argument(
        "--symbols",
        default="",
        help="comma-separated symbol patterns the holder may see, e.g. 'AAPL,FX:*' ('*' = all)",
    )
    parser.add_argument(
        "--publish",
        default=None,
        help="comma-separated symbol patterns the holder may publish (the pub claim)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of delay imposed")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_S,
        help=f"seconds until it expires (default: {DEFAULT_TTL_S:g}, one hour)",
    )
    parser.add_argument("--max-conns", type=int, default=None, help="connections at once")


def _keys(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The signing key, the key that verifies it (the server's) and the algorithm;
    ValueError for a key the server would refuse or that cannot be read."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ticker.core.tokens import check_secret

    if (args.secret is None) == (args.private_key is None):
        raise ValueError("give --secret or --private-key (one of them)")
    if args.secret is not None:
        try:
            secret = check_secret(args.secret)
        except ValueError as exc:
            raise ValueError(f"--secret: {exc}; use the server's --auth-secret") from None
        return secret, secret, "HS256"
    try:
        pem = args.private_key.read_bytes()
    except OSError as exc:
        raise ValueError(f"--private-key {args.private_key}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(pem, password=None)
    except (TypeError, ValueError):  # TypeError: a key under a passphrase
        raise ValueError(
            f"--private-key {args.private_key}: not an unencrypted PEM private key"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, key.public_key(), "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key, key.public_key(), "ES256"
    raise ValueError(f"--private-key {args.private_key}: must be RSA or EC P-256")


def run(args: argparse.Namespace) -> int:
    """Print the token, checked by the server's own verifier first: a claim the server
    would refuse (a delay past its limit, max_conns 0...) is a mistake, not a token."""
    from ticker.core.tokens import TokenError, TokenVerifier, mint

    try:
        key, public, algorithm = _keys(args)
        if args.ttl <= 0 or args.delay < 0:
            raise ValueError("--ttl must be positive and --delay not negative")
        symbols = _patterns(args.symbols)
        if not symbols and args.publish is None:
            raise ValueError(
                "give --symbols (what it may see), --publish (what it may publish) or both"
            )
        token = mint(
            key,
            algorithm=algorithm,
            sub=args.sub,
            symbols=symbols,
            ttl_s=args.ttl,
            delay_s=args.delay,
            max_conns=args.max_conns,
            publish=None if args.publish is None else _patterns(args.publish),
        )
        TokenVerifier(public, [algorithm]).verify(token)
    except TokenError as exc:
        print(f"ticker token: error: the server would refuse this token: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ticker token: error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _patterns(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]
