"""The agent's HTTPS API (port 10250) and what it streams: container logs, exec, attach,
port-forward (SPDY in a websocket) and VM serial consoles."""
