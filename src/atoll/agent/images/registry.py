"""An OCI distribution client: manifests and blobs from a registry, every byte checked.

What a registry sends is hostile until verified: manifests and configs are read up to a
size cap and must hash to the digest asked for (or declared), blobs are streamed to a file
while hashed and must match the descriptor's digest *and* size (a registry that sends more
is cut off at once), redirects are followed a bounded number of times and never to plain
http on a public host, and a registry silent mid-answer is given up on (``read_timeout``).

Authentication as the distribution spec has it: ``/v2/`` is pinged once per endpoint; a
``401`` with ``WWW-Authenticate: Bearer realm=...,service=...`` gets a token for the
repository's pull scope (anonymously or with basic credentials), ``Basic`` gets the
credentials on every request.  Credentials never appear in an exception's text (errors
are built from the registry's own ``errors`` JSON, scrubbed of any secret).

https is the default; plain http is used only for loopback registries and those the
operator marks insecure (which also skip certificate checks, as Docker's
``insecure-registries``), after https failed there.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from atoll.agent.images.platforms import (NoMatchingPlatform, Platform, choose_platform,
                                         host_platform_)
from atoll.agent.images.reference import Reference, is_loopback_host
from atoll.agent.images.registry_errors import (RegistryError, parse_challenge, short_error,
                                                status_text)

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_CHUNK = 1 << 18


@dataclass(frozen=True)
class RegistrySettings:
    """How registries are reached, and what a registry may send at most."""

    #: registries (host[:port]) reachable over plain http or https without certificate
    #: checks, as Docker's insecure-registries; loopback registries are always allowed http
    insecure: tuple[str, ...] = ()
    #: extra CA certificates (PEM) trusted for registries, besides the system's
    ca_file: Path | None = None
    #: (registry, mirror URL) pairs tried in order before the registry itself
    mirrors: tuple[tuple[str, str], ...] = ()
    #: seconds to connect (DNS and TCP and TLS)
    connect_timeout: float = 30.0
    #: seconds a registry may stay silent in the middle of an answer (a stalled blob)
    read_timeout: float = 60.0
    #: seconds a whole small request (ping, token, manifest) may take
    request_timeout: float = 120.0
    #: caps against a registry that sends garbage: manifests (containerd: 4 MiB), image
    #: configs, layers per image, redirects per request
    manifest_max_bytes: int = 4 << 20
    config_max_bytes: int = 8 << 20
    max_layers: int = 256
    max_redirects: int = 5


@dataclass(frozen=True)
class Credentials:
    """Basic credentials (or an identity token as the password of user ``<token>``)."""

    username: str = field(repr=False)
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def secrets(self) -> list[str]:
        """Strings that must never be shown."""
        raw = f"{self.username}:{self.password}".encode()
        return [s for s in (self.password, base64.b64encode(raw).decode()) if len(s) >= 3]

    def __repr__(self) -> str:
        return "Credentials(***)"


@dataclass
class Endpoint:
    """One place a repository is served from: a mirror or the registry itself."""

    host: str  # host[:port]
    scheme: str = "https"
    mirror: bool = False
    insecure: bool = False

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass
class Resolved:
    """What a reference names: the (top-level) manifest digest, the image manifest for
    this platform, its config, and where it was found."""

    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    config_size: int
    layers: list[dict[str, Any]]
    endpoint: Endpoint
    repo: str

    @property
    def content_size(self) -> int:
        return self.config_size + sum(int(d["size"]) for d in self.layers)


class RegistryClient:
    """Talks to registries for one agent; one aiohttp session, tokens cached per scope."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._challenges: dict[str, tuple[str, dict[str, str]] | None] = {}
        #: hosts found to speak plain http (loopback or insecure ones only)
        self._plain: set[str] = set()
        self._verified = ssl.create_default_context()
        if self.settings.ca_file is not None:
            self._verified.load_verify_locations(cafile=str(self.settings.ca_file))
        self._unverified = ssl.create_default_context()
        self._unverified.check_hostname = False
        self._unverified.verify_mode = ssl.CERT_NONE

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=s.connect_timeout,
                                              sock_connect=s.connect_timeout,
                                              sock_read=s.read_timeout),
                auto_decompress=False, trust_env=False,
                headers={"User-Agent": "atoll-agent", "Accept-Encoding": "identity"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- endpoints --------------------------------------------------------------------------------
    def insecure(self, host: str) -> bool:
        return host in self.settings.insecure

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Mirrors of the reference's registry, in order, then the registry itself."""
        out = []
        for registry, url in self.settings.mirrors:
            if registry != ref.domain:
                continue
            parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                continue
            host = parts.netloc.rsplit("@", 1)[-1]
            if parts.scheme == "http" and not (is_loopback_host(host) or self.insecure(host)):
                log.warning("registry mirror %s: plain http is only for loopback or insecure "
                            "registries; skipped", host)
                continue
            out.append(Endpoint(host, parts.scheme, mirror=True, insecure=self.insecure(host)))
        host = ref.endpoint_host
        out.append(Endpoint(host, "http" if host in self._plain else "https",
                            insecure=self.insecure(host)))
        return out

    def _ssl(self, host: str) -> ssl.SSLContext:
        return self._unverified if self.insecure(host) else self._verified

    def _http_allowed(self, host: str) -> bool:
        return is_loopback_host(host) or self.insecure(host)

    async def ping(self, ep: Endpoint) -> None:
        """``GET /v2/``: which scheme works, and which authentication the registry asks."""
        if ep.base in self._challenges:
            return
        try:
            challenge = await self._ping_once(ep)
        except RegistryError as first:
            if ep.scheme != "https" or not self._http_allowed(ep.host) or \
                    getattr(first, "tls", False) is False:
                raise
            ep.scheme = "http"
            try:
                challenge = await self._ping_once(ep)
            except RegistryError:
                ep.scheme = "https"
                raise first from None
            self._plain.add(ep.host)
        self._challenges[ep.base] = challenge

    async def _ping_once(self, ep: Endpoint) -> tuple[str, dict[str, str]] | None:
        url = f"{ep.base}/v2/"
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                async with self.session().get(url, ssl=self._ssl(ep.host) if ep.scheme == "https"
                                              else False, allow_redirects=False) as resp:
                    body = await _read_capped(resp, 64 << 10, "the /v2/ answer")
                    if resp.status == 401:
                        return parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                    if resp.status in (200, 404) or 200 <= resp.status < 300:
                        # some registries answer 404 at /v2/ yet serve /v2/<name>/...
                        return None
                    raise RegistryError(status_text(resp.status, body, ep.host, []))
        except TimeoutError:
            raise RegistryError(f"the registry {ep.host} did not answer in "
                                f"{self.settings.request_timeout:g}s") from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as e:
            err = RegistryError(f"TLS to {ep.host} failed: {short_error(e)}")
            err.tls = True  # type: ignore[attr-defined]
            raise err from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientResponseError) as e:
            # an http server spoken to in TLS, or the other way round
            err = RegistryError(f"{ep.host} does not speak {ep.scheme}: {short_error(e)}")
            err.tls = True  # type: ignore[attr-defined]
            raise err from None
        except aiohttp.ClientConnectorError as e:
            raise RegistryError(f"cannot reach the registry {ep.host}: {short_error(e)}") from None
        except (aiohttp.ClientError, OSError) as e:
            err = RegistryError(f"cannot reach the registry {ep.host}: {short_error(e)}")
            err.tls = ep.scheme == "https"  # type: ignore[attr-defined]
            raise err from None

    # -- authentication -------------------------------------------------------------------------
    async def _auth_header(self, ep: Endpoint, repo: str, creds: Credentials | None,
                           refresh: bool = False) -> str | None:
        challenge = self._challenges.get(ep.base)
        if challenge is None:
            return None
        scheme, params = challenge
        if scheme == "basic":
            return creds.basic() if creds else None
        if scheme != "bearer":
            raise RegistryError(f"the registry {ep.host} asks for unsupported authentication "
                                f"{scheme!r}", retry_elsewhere=True)
        scope = f"repository:{repo}:pull"
        key = (ep.base, scope, creds.basic() if creds else "")
        cached = self._tokens.get(key)
        if cached and not refresh and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        token, lifetime = await self._token(ep, params, scope, creds)
        self._tokens[key] = (token, time.monotonic() + max(10.0, lifetime - 10.0))
        return f"Bearer {token}"

    async def _token(self, ep: Endpoint, params: dict[str, str], scope: str,
                     creds: Credentials | None) -> tuple[str, float]:
        realm = params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise RegistryError(f"the registry {ep.host} names an invalid token realm")
        if parts.scheme == "http" and not self._http_allowed(parts.netloc):
            raise RegistryError(f"the registry {ep.host} names a token realm over plain http "
                                f"({parts.netloc}); refused")
        query = [("scope", scope)]
        if params.get("service"):
            query.insert(0, ("service", params["service"]))
        sep = "&" if parts.query else "?"
        url = realm + sep + urllib.parse.urlencode(query)
        headers = {"Authorization": creds.basic()} if creds else {}
        secrets = creds.secrets() if creds else []
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                async with self.session().get(
                        url, headers=headers, allow_redirects=False,
                        ssl=self._ssl(parts.netloc) if parts.scheme == "https" else False) as resp:
                    body = await _read_capped(resp, 1 << 20, "the token answer")
                    if resp.status != 200:
                        raise RegistryError(
                            status_text(resp.status, body, parts.netloc, secrets),
                            unauthorized=resp.status in (401, 403))
        except TimeoutError:
            raise RegistryError(f"the token server {parts.netloc} did not answer") from None
        except (aiohttp.ClientError, OSError) as e:
            raise RegistryError(f"cannot get a token from {parts.netloc}: {short_error(e)}") from None
        try:
            data = orjson.loads(body)
            token = data.get("token") or data.get("access_token")
            assert isinstance(token, str) and token
            lifetime = float(data.get("expires_in") or 60)
        except (orjson.JSONDecodeError, AssertionError, AttributeError, TypeError, ValueError):
            raise RegistryError(f"the token server {parts.netloc} sent no token") from None
        return token, lifetime

    # -- requests ---------------------------------------------------------------------------------
    async def _get(self, ep: Endpoint, repo: str, path: str, creds: Credentials | None,
                   headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET with authentication (one retry on 401 with a fresh token) and bounded
        redirects; the caller reads and releases the response."""
        await self.ping(ep)
        secrets = creds.secrets() if creds else []
        auth = await self._auth_header(ep, repo, creds)
        for attempt in range(2):
            resp = await self._follow(ep, f"{ep.base}/v2/{repo}/{path}", headers, auth)
            if resp.status != 401 or attempt == 1:
                break
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            body = await _read_capped(resp, 64 << 10, "an error answer")
            resp.release()
            if challenge is None or (challenge[0] == "basic" and (creds is None or auth)):
                raise RegistryError(status_text(401, body, ep.host, secrets), unauthorized=True)
            self._challenges[ep.base] = challenge
            auth = await self._auth_header(ep, repo, creds, refresh=True)
        if resp.status in (401, 403):
            body = await _read_capped(resp, 64 << 10, "an error answer")
            resp.release()
            raise RegistryError(status_text(resp.status, body, ep.host, secrets),
                                unauthorized=True)
        if resp.status != 200:
            body = await _read_capped(resp, 64 << 10, "an error answer")
            resp.release()
            raise RegistryError(status_text(resp.status, body, ep.host, secrets),
                                not_found=resp.status == 404)
        return resp

    async def _follow(self, ep: Endpoint, url: str, headers: dict[str, str],
                      auth: str | None) -> aiohttp.ClientResponse:
        """Follow redirects by hand: at most ``max_redirects``, no downgrade to http on a
        public host, the registry's Authorization never sent to another host."""
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(self.settings.max_redirects + 1):
            parts = urllib.parse.urlsplit(url)
            h = dict(headers)
            if auth and parts.netloc == origin:
                h["Authorization"] = auth
            try:
                resp = await self.session().get(
                    url, headers=h, allow_redirects=False,
                    ssl=self._ssl(parts.netloc) if parts.scheme == "https" else False)
            except TimeoutError:
                raise RegistryError(f"{parts.netloc} did not answer in "
                                    f"{self.settings.read_timeout:g}s") from None
            except (aiohttp.ClientError, OSError) as e:
                raise RegistryError(f"cannot reach {parts.netloc}: {short_error(e)}") from None
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location", "")
            resp.release()
            nxt = urllib.parse.urljoin(url, location)
            np = urllib.parse.urlsplit(nxt)
            if np.scheme not in ("http", "https") or not np.netloc:
                raise RegistryError(f"{parts.netloc} redirected to an invalid location")
            if np.scheme == "http" and not self._http_allowed(np.netloc):
                raise RegistryError(f"{parts.netloc} redirected to plain http at {np.netloc}; "
                                    f"refused")
            url = nxt
        raise RegistryError(f"{origin} redirected more than {self.settings.max_redirects} "
                            f"times")

    # -- manifests ---------------------------------------------------------------------------------
    async def resolve(self, ref: Reference, creds: Credentials | None, ep: Endpoint,
                      want: Platform | None = None) -> Resolved:
        """The image ``ref`` names for this platform at ``ep``: manifest (through an index
        if there is one) and config, verified."""
        want = want or host_platform_()
        data, media, digest = await self._manifest(ep, ref.path, ref.locator, creds,
                                                   expect=ref.digest)
        top = digest
        for _ in range(3):
            if media not in INDEX_TYPES:
                break
            try:
                desc = choose_platform(data, want)
            except NoMatchingPlatform as e:
                raise RegistryError(str(e), retry_elsewhere=False) from None
            d, size = _descriptor(desc, "a manifest list entry")
            data, media, _ = await self._manifest(ep, ref.path, d, creds, expect=d,
                                                  expect_size=size)
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"unsupported manifest type {media!r} for {ref}",
                                retry_elsewhere=False)
        if data.get("schemaVersion") != 2:
            raise RegistryError(f"unsupported manifest schemaVersion for {ref}")
        config_digest, config_size = _descriptor(data.get("config"), "the config")
        layers = data.get("layers")
        if not isinstance(layers, list) or len(layers) > self.settings.max_layers:
            raise RegistryError(f"the manifest of {ref} has no valid layer list (at most "
                                f"{self.settings.max_layers} layers)")
        for desc in layers:
            _descriptor(desc, "a layer")
            if "nondistributable" in str(desc.get("mediaType", "")) or \
                    "foreign" in str(desc.get("mediaType", "")):
                raise RegistryError(f"{ref} has a foreign (non-distributable) layer; "
                                    f"not supported")
        if config_size > self.settings.config_max_bytes:
            raise RegistryError(f"the config of {ref} is {config_size} bytes (at most "
                                f"{self.settings.config_max_bytes})")
        raw = await self.blob_bytes(ep, ref.path, config_digest, config_size, creds)
        try:
            config = orjson.loads(raw)
            assert isinstance(config, dict)
        except (orjson.JSONDecodeError, AssertionError):
            raise RegistryError(f"the config of {ref} is not a JSON object") from None
        arch, os_ = config.get("architecture"), config.get("os")
        if isinstance(arch, str) and isinstance(os_, str) and (os_, arch) != (
                want.os, want.architecture):
            raise RegistryError(f"{ref} is an image for {os_}/{arch}; this host runs "
                                f"{want.os}/{want.architecture}", retry_elsewhere=False)
        return Resolved(top, data, config, config_digest, config_size, layers, ep, ref.path)

    async def _manifest(self, ep: Endpoint, repo: str, locator: str, creds: Credentials | None,
                        *, expect: str = "", expect_size: int = -1
                        ) -> tuple[dict[str, Any], str, str]:
        cap = self.settings.manifest_max_bytes
        if expect_size > cap:
            raise RegistryError(f"a manifest of {expect_size} bytes is over the {cap} limit")
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                resp = await self._get(ep, repo, f"manifests/{locator}", creds,
                                       {"Accept": ACCEPT})
                try:
                    body = await _read_capped(resp, cap, "the manifest")
                    declared = resp.headers.get("Docker-Content-Digest", "")
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
                finally:
                    resp.release()
        except TimeoutError:
            raise RegistryError(f"{ep.host} did not send the manifest of {repo}:{locator} in "
                                f"{self.settings.request_timeout:g}s") from None
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if expect and digest != expect:
            raise RegistryError(f"manifest digest mismatch for {repo}@{expect}: the registry "
                                f"sent {digest}", retry_elsewhere=True)
        if expect_size >= 0 and len(body) != expect_size:
            raise RegistryError(f"manifest size mismatch for {repo}@{expect}: {len(body)} bytes,"
                                f" not {expect_size}")
        if declared and _DIGEST_RE.fullmatch(declared) and declared != digest:
            raise RegistryError(f"the registry declares the manifest of {repo}:{locator} as "
                                f"{declared} but sent {digest}")
        try:
            data = orjson.loads(body)
            assert isinstance(data, dict)
        except (orjson.JSONDecodeError, AssertionError):
            raise RegistryError(f"the manifest of {repo}:{locator} is not a JSON "
                                f"object") from None
        media = data.get("mediaType") if isinstance(data.get("mediaType"), str) else ctype
        if not media and isinstance(data.get("manifests"), list):
            media = OCI_INDEX
        elif not media and isinstance(data.get("layers"), list):
            media = OCI_MANIFEST
        return data, str(media), digest

    # -- blobs -------------------------------------------------------------------------------------
    async def blob_bytes(self, ep: Endpoint, repo: str, digest: str, size: int,
                         creds: Credentials | None) -> bytes:
        """A small blob (a config) in memory, verified."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                resp = await self._get(ep, repo, f"blobs/{digest}", creds, {})
                try:
                    body = await _read_capped(resp, size, f"blob {digest}", exact=True)
                finally:
                    resp.release()
        except TimeoutError:
            raise RegistryError(f"{ep.host} did not send blob {digest} in time") from None
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if got != digest:
            raise RegistryError(f"digest mismatch for blob {digest}: got {got}")
        return body

    async def fetch_blob(self, ep: Endpoint, repo: str, digest: str, size: int,
                         creds: Credentials | None, dest: Path) -> None:
        """Stream a blob into ``dest`` while hashing; on any failure ``dest`` is removed,
        so only a blob of the declared size and digest is ever left there."""
        ok = False
        try:
            resp = await self._get(ep, repo, f"blobs/{digest}", creds, {})
            try:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) != size:
                    raise RegistryError(f"size mismatch for blob {digest}: the registry "
                                        f"announces {length} bytes, the manifest {size}")
                h = hashlib.sha256()
                got = 0
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        got += len(chunk)
                        if got > size:
                            raise RegistryError(f"size mismatch for blob {digest}: the registry "
                                                f"sent more than the {size} bytes declared")
                        h.update(chunk)
                        out.write(chunk)
                if got != size:
                    raise RegistryError(f"size mismatch for blob {digest}: got {got} of "
                                        f"{size} bytes")
                if "sha256:" + h.hexdigest() != digest:
                    raise RegistryError(f"digest mismatch for blob {digest}: got "
                                        f"sha256:{h.hexdigest()}")
                ok = True
            finally:
                resp.release()
        except TimeoutError:
            raise RegistryError(f"{ep.host} stalled sending blob {digest} (nothing for "
                                f"{self.settings.read_timeout:g}s)") from None
        except (aiohttp.ClientError, OSError) as e:
            raise RegistryError(f"downloading blob {digest} from {ep.host} failed: "
                                f"{short_error(e)}") from None
        finally:
            if not ok:
                try:
                    dest.unlink()
                except OSError:
                    pass


# -- helpers ---------------------------------------------------------------------------------------
def _descriptor(desc: Any, what: str) -> tuple[str, int]:
    if not isinstance(desc, dict):
        raise RegistryError(f"the manifest has no valid descriptor for {what}")
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise RegistryError(f"the manifest names {what} by an invalid or unsupported digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"the manifest gives {what} an invalid size")
    return digest, size


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, what: str,
                       exact: bool = False) -> bytes:
    """The body, refused once it passes ``cap`` bytes (a registry cannot fill memory)."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise RegistryError(f"{what} is {length} bytes, over the {cap} limit")
    buf = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > cap:
                raise RegistryError(f"{what} is over the {cap} bytes " +
                                    ("declared" if exact else "limit"))
    except TimeoutError:
        raise RegistryError(f"the registry stalled sending {what}") from None
    except (aiohttp.ClientError, OSError) as e:
        raise RegistryError(f"reading {what} failed: {short_error(e)}") from None
    if exact and len(buf) != cap:
        raise RegistryError(f"size mismatch for {what}: got {len(buf)} of {cap} bytes")
    return bytes(buf)


