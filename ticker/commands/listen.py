"""``ticker serve``'s listening sockets, bound before anything starts or logs: a port in
use, a host that is no address of this machine or a name that does not resolve becomes
one line naming the flag and the address, instead of a traceback from deep in asyncio."""

from __future__ import annotations

import errno
import socket

from ticker.commands.argtypes import env_name
from ticker.server.settings import url_host


class ListenError(Exception):
    """An address ``serve`` cannot listen on; the message names it and says what to do."""


def bind(
    host: str, port: int, *, host_flag: str, port_flag: str, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as ``create_server`` binds
    them: SO_REUSEADDR, IPv6 only on IPv6 sockets), for ``web.SockSite``; ``reuse_port``:
    SO_REUSEPORT too, so that more sockets can listen on the same address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"{host_flag} {host}: not an address or a host name that resolves "
            f"({exc.strerror}); use e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    sockets: list[socket.socket] = []
    address = f"{url_host(host)}:{port}"
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen()  # now, so a port this process already holds fails here too
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(_why(exc, address, host_flag, port_flag)) from None
    return sockets


def bind_copies(
    host: str, port: int, copies: int, *, host_flag: str, port_flag: str
) -> list[list[socket.socket]]:
    """``copies`` sets of listening sockets on the same addresses, with SO_REUSEPORT: the
    kernel spreads new connections over them (one set per worker). The addresses are
    first bound once without it, so a port anything else holds, another ticker with
    workers included, is the usual one line rather than a port silently shared."""
    for sock in bind(host, port, host_flag=host_flag, port_flag=port_flag):
        sock.close()
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(copies):
            groups.append(
                bind(host, port, host_flag=host_flag, port_flag=port_flag, reuse_port=True)
            )
    except ListenError:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def _why(exc: OSError, address: str, host_flag: str, port_flag: str) -> str:
    use_port = f"use {port_flag} or {env_name(port_flag)}"
    if exc.errno == errno.EADDRINUSE:
        return f"{port_flag}: {address} is in use: is another ticker running? {use_port}"
    if exc.errno == errno.EACCES:
        return f"{port_flag}: no permission to listen on {address} (a port below 1024?); {use_port}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host_flag}: cannot listen on {address}: not an address of this machine; "
            f"use one of its addresses, 127.0.0.1 or 0.0.0.0"
        )
    return f"{host_flag}/{port_flag}: cannot listen on {address}: {exc.strerror}"
