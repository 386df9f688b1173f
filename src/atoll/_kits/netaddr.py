"""This host's address as others on the network see it."""

from __future__ import annotations

import socket


def default_route_address(fallback: str = "127.0.0.1") -> str:
    """The source address of the default route: what other hosts (and this host's pods)
    reach this one on.  A UDP connect picks it without sending a packet."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1
        return str(probe.getsockname()[0])
    except OSError:
        return fallback
    finally:
        probe.close()
