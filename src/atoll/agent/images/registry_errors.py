"""A registry's answers as text a user may read: its own error words, never a secret.

Registries explain refusals in an ``errors`` JSON list; those words (scrubbed of every
credential the pull carried, made printable and short) are what pods' status and events
show.  ``parse_challenge`` reads the ``WWW-Authenticate`` header a ``401`` carries.
"""

from __future__ import annotations

import re

import orjson


class RegistryError(Exception):
    """A pull failed; the text is safe to show a user (no credentials)."""

    def __init__(self, message: str, *, unauthorized: bool = False,
                 not_found: bool = False, retry_elsewhere: bool = True) -> None:
        super().__init__(message)
        self.unauthorized = unauthorized
        self.not_found = not_found
        #: a mirror's failure lets the next endpoint be tried
        self.retry_elsewhere = retry_elsewhere


def parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """``Bearer realm="https://auth",service="reg",scope="..."`` → ("bearer", {...})."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest)}
    for k, v in re.findall(r'([A-Za-z_]+)=([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


def status_text(status: int, body: bytes, host: str, secrets: list[str]) -> str:
    """The registry's own words (its ``errors`` JSON), never a secret."""
    reasons = []
    try:
        data = orjson.loads(body)
        for err in (data.get("errors") or [])[:5] if isinstance(data, dict) else []:
            if isinstance(err, dict):
                code = str(err.get("code") or "").lower()
                msg = str(err.get("message") or "")
                reasons.append(f"{code}: {msg}" if code and msg else code or msg)
        if not reasons and isinstance(data, dict) and data.get("details"):
            reasons.append(str(data["details"]))
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        pass
    text = "; ".join(r for r in reasons if r)
    if not text:
        text = {401: "unauthorized", 403: "denied", 404: "not found",
                429: "too many requests"}.get(status, "unexpected answer")
    return scrub(f"{text} ({status} from {host})", secrets)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` printable and short, every secret replaced."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:600]


def short_error(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300] if text else type(e).__name__
