"""Atoll's web console: static ES modules served by the API server under ``/ui/``.

The page holds no data and has no API of its own: everything it shows comes from
the ordinary Kubernetes API with the signed-in user's own credentials, so RBAC
decides what each person sees (``server.py`` serves the files and their headers).
"""

from atoll.webui.server import routes

__all__ = ["routes"]
