"""Joining a server to a cluster through the datastore, protected by a join token.

Every API server over one store must share the cluster CA (so one kubeconfig
works against all) and the ServiceAccount signing key (so tokens are accepted
everywhere).  ``--ca-from DIR`` copies them from the first server's disk; with
``--join-token`` they travel through the store instead: the first server seals
them (AES-256-GCM, key derived from the token with scrypt, a fresh salt) under
a key outside ``/registry/``, which the API never serves, and a joining server
with the same token unseals them before it starts.  A wrong token is refused
without touching anything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from atoll.apiserver import pki
from atoll.storage.store import KeyExists, Store

log = logging.getLogger(__name__)
SEALED_KEY = "/atoll/join/pki"
#: the files a server needs to be one of the cluster's
SHARED_FILES = ("ca.crt", "ca.key", "sa.key")


class JoinError(Exception):
    pass


def _key(token: str, salt: bytes) -> bytes:
    if len(token) < 16:
        raise JoinError("a join token must be at least 16 characters")
    return Scrypt(salt=salt, length=32, n=2 ** 15, r=8, p=1).derive(token.encode())


def seal(files: dict[str, bytes], token: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    box = AESGCM(_key(token, salt)).encrypt(nonce, orjson.dumps(
        {name: data.decode() for name, data in files.items()}), b"atoll-join")
    return orjson.dumps({"v": 1, "salt": salt.hex(), "nonce": nonce.hex(), "box": box.hex()})


def unseal(blob: bytes, token: str) -> dict[str, bytes]:
    try:
        doc = orjson.loads(blob)
        salt, nonce, box = (bytes.fromhex(doc[k]) for k in ("salt", "nonce", "box"))
    except (ValueError, KeyError, TypeError):
        raise JoinError("the sealed cluster keys in the datastore are damaged") from None
    try:
        plain = AESGCM(_key(token, salt)).decrypt(nonce, box, b"atoll-join")
    except InvalidTag:
        raise JoinError("the join token does not open the cluster keys (wrong token?)") from None
    return {name: data.encode() for name, data in orjson.loads(plain).items()}


async def join(store: Store, pki_dir: Path, token: str) -> None:
    """Before the CA is made: take the cluster's keys from the store if this server has none."""
    if (pki_dir / "ca.key").exists():
        return
    kv = await store.get(SEALED_KEY)
    if kv is None:
        return  # the first server: it makes the keys and publishes them
    files = unseal(kv.value, token)
    pki_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name in SHARED_FILES:
            pki.write_file(pki_dir / name, data.decode())
    log.info("joined the cluster: CA and signing key taken from the datastore")


async def publish(store: Store, pki_dir: Path, token: str) -> None:
    """After the keys exist: seal them into the store for servers that join later."""
    files = {name: (pki_dir / name).read_bytes() for name in SHARED_FILES
             if (pki_dir / name).exists()}
    existing = await store.get(SEALED_KEY)
    if existing is not None:
        theirs = unseal(existing.value, token)  # the same token must open what is there
        if theirs.get("ca.crt") != files.get("ca.crt"):
            raise JoinError("this server's CA differs from the cluster's in the datastore: "
                            "start it with an empty data dir (or --ca-from) to join")
        return
    try:
        await store.create(SEALED_KEY, seal(files, token))
    except KeyExists:
        pass
