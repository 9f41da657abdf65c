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

from ticker.commands.security import SECRET_ENV

DEFAULT_TTL_S = 3600.0


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "token",
        help="mint an access token (JWT) for a ticker server",
        description="Mint a JWT with the claims ticker serve reads (sub, exp, symbols, "
        "delay, max_conns) and print it.",
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
        required=True,
        help="comma-separated symbol patterns the holder may see, e.g. 'AAPL,FX:*' ('*' = all)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of delay imposed")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_S,
        help=f"seconds until it expires (default: {DEFAULT_TTL_S:g}, one hour)",
    )
    parser.add_argument("--max-conns", type=int, default=None, help="connections at once")


def _key(args: argparse.Namespace) -> tuple[Any, str]:
    """The signing key and its algorithm; ValueError for one the server would refuse."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ticker.core.tokens import check_secret

    if (args.secret is None) == (args.private_key is None):
        raise ValueError("give --secret or --private-key (one of them)")
    if args.secret is not None:
        try:
            return check_secret(args.secret), "HS256"
        except ValueError as exc:
            raise ValueError(f"--secret: {exc}; use the server's --auth-secret") from None
    key = load_pem_private_key(args.private_key.read_bytes(), password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key, "ES256"
    raise ValueError("the private key must be RSA or EC P-256")


def run(args: argparse.Namespace) -> int:
    try:
        key, algorithm = _key(args)
        if args.ttl <= 0 or args.delay < 0:
            raise ValueError("--ttl must be positive and --delay not negative")
    except (OSError, ValueError) as exc:
        print(f"ticker token: error: {exc}", file=sys.stderr)
        return 2
    from ticker.core.tokens import mint

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    print(
        mint(
            key,
            algorithm=algorithm,
            sub=args.sub,
            symbols=symbols,
            ttl_s=args.ttl,
            delay_s=args.delay,
            max_conns=args.max_conns,
        )
    )
    return 0
