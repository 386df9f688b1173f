"""Listening sockets on the pod bridge's address, for the servers the agent runs for its pods."""

from __future__ import annotations

import socket

IP_FREEBIND = 15  # linux/in.h: bind before the address is on an interface


def bound(kind: socket.SocketKind, address: str, port: int) -> socket.socket:
    """A socket bound to ``address:port`` even before the bridge carries the address (the
    bridge comes up with the first pod)."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock
