"""``ticker serve``'s security flags: tokens, browser origins, TLS and connection limits.

Each flag also reads its ``TICKER_*`` variable (``TICKER_AUTH_SECRET`` keeps the secret
out of the process list). docs/security.md says what each one defends against.
"""

from __future__ import annotations

import argparse
import os
import ssl
from typing import Any

from ticker.commands.argtypes import non_negative, positive, readable_file
from ticker.commands.envparser import EnvParser
from ticker.core.admission import ConnectionLimits
from ticker.core.delay import DEFAULT_MAX_BYTES
from ticker.server.tls import server_context

DEFAULT_CONNECTIONS = ConnectionLimits()
SECRET_ENV = "TICKER_AUTH_SECRET"


def _origins(text: str) -> list[str]:
    """Comma-separated origins, e.g. ``https://app.example.com``; ``*`` = any origin."""
    origins = [o.strip().lower().rstrip("/") for o in text.split(",") if o.strip()]
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise argparse.ArgumentTypeError(
                f"{origin!r} is not an origin like https://host[:port] (or *)"
            )
    return origins


def add_security_options(parser: EnvParser) -> None:
    """Auth, TLS and connection limits: every flag that decides who may connect."""
    add = parser.add_option
    parser.add_argument(  # not add_option: --help would print the secret from the environment
        "--auth-secret",
        default=os.environ.get(SECRET_ENV) or None,
        help=f"require HS256 tokens signed with this secret (32+ characters) [env {SECRET_ENV}]",
    )
    add(
        "--auth-public-key",
        type=readable_file,
        default=None,
        help="require tokens signed by this key's private half (PEM; RSA: RS256, EC: ES256)",
    )
    add(
        "--allowed-origin",
        type=_origins,
        action="extend",
        default=[],
        help="a browser origin allowed besides the server's own (repeatable, or "
        "comma-separated; * = any)",
    )
    add(
        "--tls-cert",
        type=readable_file,
        default=None,
        help="serve https and wss with this certificate",
    )
    add("--tls-key", type=readable_file, default=None, help="the private key of --tls-cert")
    add(
        "--max-message-bytes",
        type=positive(int),
        default=64 * 1024,
        help="largest message a client may send (bigger: close 1009)",
    )
    add(
        "--idle-timeout",
        type=non_negative(float, zero="0 = off"),
        default=0.0,
        help="close (1008) a client subscribed to nothing this many seconds after connecting; "
        "0 = never",
    )
    add(
        "--max-connections",
        type=non_negative(int, zero="0 = no limit"),
        default=DEFAULT_CONNECTIONS.max_connections,
        help="connections in all (more: 503); 0 = no limit",
    )
    add(
        "--max-connections-per-ip",
        type=non_negative(int, zero="0 = no limit"),
        default=DEFAULT_CONNECTIONS.max_connections_per_ip,
        help="connections per client address (more: 429); 0 = no limit",
    )
    add(
        "--max-connections-per-subject",
        type=non_negative(int, zero="0 = no limit"),
        default=DEFAULT_CONNECTIONS.max_connections_per_subject,
        help="connections per token subject unless its max_conns says (more: 429); 0 = none",
    )
    add(
        "--max-handshakes",
        type=non_negative(int, zero="0 = no limit"),
        default=DEFAULT_CONNECTIONS.max_handshakes,
        help="handshakes in progress at once (more: 503); 0 = no limit",
    )
    add(
        "--delay-max-bytes",
        type=positive(int),
        default=DEFAULT_MAX_BYTES,
        help="bytes each delay line (delayed-data tokens) may hold",
    )


def security_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``Settings`` fields from the flags; ValueError on a bad key or a lone TLS file."""
    if args.auth_secret and args.auth_public_key:
        raise ValueError("give --auth-secret or --auth-public-key, not both")
    from ticker.core.tokens import TokenVerifier  # PyJWT and cryptography: only when used

    verifier: TokenVerifier | None = None
    if args.auth_secret:
        try:
            verifier = TokenVerifier.from_secret(args.auth_secret)
        except ValueError as exc:  # the secret itself stays out of the message
            raise ValueError(f"--auth-secret ({SECRET_ENV}): {exc}") from None
    elif args.auth_public_key is not None:
        try:
            verifier = TokenVerifier.from_public_key(args.auth_public_key.read_bytes())
        except ValueError:  # not PEM, or a key of another kind
            raise ValueError(
                f"--auth-public-key {args.auth_public_key}: not an RSA or EC P-256 public key "
                "in PEM (-----BEGIN PUBLIC KEY-----)"
            ) from None
    return {
        "auth": verifier,
        "allowed_origins": tuple(args.allowed_origin),
        "connection_limits": ConnectionLimits(
            max_connections=args.max_connections,
            max_connections_per_ip=args.max_connections_per_ip,
            max_connections_per_subject=args.max_connections_per_subject,
            max_handshakes=args.max_handshakes,
        ),
        "delay_max_bytes": args.delay_max_bytes,
    }


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The context of ``--tls-cert``/``--tls-key``; ValueError naming both files when
    they are not a PEM certificate and its key (ssl's own message names neither)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    try:
        return server_context(args.tls_cert, args.tls_key)
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {args.tls_cert} and --tls-key {args.tls_key}: not a PEM certificate "
            "and its private key" + (f" ({exc.reason})" if exc.reason else "")
        ) from None
