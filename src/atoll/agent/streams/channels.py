"""The Kubernetes channel protocol that exec and attach speak over a websocket.

Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final
Status, 4 terminal resize, 255 close a stream (v5 only).
"""

from __future__ import annotations

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
