"""Projected ServiceAccount tokens are rewritten in place before 80% of their lifetime."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson

from atoll.agent.pods import volumes


def test_due_tokens_are_replaced_in_place(tmp_path: Path) -> None:
    vol = tmp_path / "volumes" / "kube-api-access-x"
    vol.mkdir(parents=True)
    (vol / "token").write_text("old")
    inode = os.stat(vol).st_ino
    now = time.time()
    (tmp_path / volumes.TOKENS_FILE).write_bytes(orjson.dumps({
        "kube-api-access-x/token": {"audience": None, "seconds": 3600,
                                    "issued": now - 3000, "expires": now + 600}}))
    asked: list[tuple[str | None, int]] = []

    async def request(audience: str | None, seconds: int) -> tuple[str, float]:
        asked.append((audience, seconds))
        return "new", time.time() + seconds

    due = asyncio.run(volumes.refresh_tokens(tmp_path, request))
    assert (vol / "token").read_text() == "new" and os.stat(vol).st_ino == inode
    assert asked == [(None, 3600)]
    assert 2800 < due <= 2880  # 80% of the new token's hour
    assert asyncio.run(volumes.refresh_tokens(tmp_path, request)) > 2800 and len(asked) == 1
