"""The Kubernetes channel protocol that exec and attach speak over a websocket.

Every message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final Status,
4 terminal resize, 255 close a stream (v5 only).  Clients send BINARY frames (kubectl) or
TEXT frames (the official Python client writes ``chr(channel) + text``); both are read.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def decode(msg: Any) -> tuple[int, bytes] | None:
    """(channel, payload) of a client's websocket message; None for anything else."""
    if msg.type == WSMsgType.BINARY and msg.data:
        return msg.data[0], bytes(msg.data[1:])
    if msg.type == WSMsgType.TEXT and msg.data:
        first = ord(msg.data[0])
        if first <= 255:
            return first, msg.data[1:].encode()
    return None


def window_size(payload: bytes) -> tuple[int, int] | None:
    """(rows, columns) of a resize message (``{"Width": .., "Height": ..}``), None if bad."""
    try:
        size = json.loads(payload)
        rows, cols = int(size["Height"]), int(size["Width"])
    except (ValueError, KeyError, TypeError):
        return None
    if not (0 <= rows <= 0xFFFF and 0 <= cols <= 0xFFFF):
        return None
    return rows, cols
