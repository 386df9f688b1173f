"""nftables, the way kube-proxy's nftables mode drives it: one table of our own per job, each
change one ``nft -f -`` transaction (all of it applies or none does), never a flush of
anyone else's rules.

The ``nft`` binary is the interface (Debian's ``python3-nftables`` binding is not on
PyPI, and a script on stdin is the same transaction either way).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any


#: Kubernetes protocols as nftables names them
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def short_hash(text: str) -> str:
    """Eight base32 characters of sha256: the prefix that keeps long chain names unique."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest())[:8].decode()


class NftError(Exception):
    """``nft`` refused a script; the message is nft's own (it names the line)."""


async def run(script: str) -> None:
    """Apply ``script`` as one transaction."""
    proc = await asyncio.create_subprocess_exec(
        "nft", "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip() or f"nft exited {proc.returncode}")


async def list_json(*what: str) -> list[dict[str, Any]]:
    """``nft -j list <what...>`` as its ``nftables`` array ([] if the object is absent)."""
    proc = await asyncio.create_subprocess_exec(
        "nft", "-j", "list", *what, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return []
    try:
        return list(json.loads(out).get("nftables") or [])
    except ValueError:
        return []


def recreate_table(family: str, name: str, body: str) -> str:
    """A script replacing table ``family name`` whole with ``body``: declare (so the delete
    cannot fail), delete, define; in one transaction there is no moment without rules."""
    return f"table {family} {name} {{}}\ndelete table {family} {name}\n" \
           f"table {family} {name} {{\n{body}}}\n"


async def delete_table(family: str, name: str) -> None:
    """Remove table ``family name`` if it exists."""
    await run(f"table {family} {name} {{}}\ndelete table {family} {name}\n")
