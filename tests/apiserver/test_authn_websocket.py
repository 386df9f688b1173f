"""The bearer token a browser's WebSocket carries as a subprotocol (authn.websocket_token)."""

from __future__ import annotations

import base64

import pytest
from aiohttp.test_utils import make_mocked_request

from atoll.api import errors
from atoll.apiserver.authn import WEBSOCKET_TOKEN_PROTOCOL, public_path, websocket_token


def upgrade(protocols: str) -> object:
    return make_mocked_request("GET", "/api/v1/namespaces/a/pods/p/exec", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Protocol": protocols})


def encoded(token: str) -> str:
    return WEBSOCKET_TOKEN_PROTOCOL + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def test_the_token_is_taken_out_of_the_offered_protocols() -> None:
    token, request = websocket_token(upgrade(f"v5.channel.k8s.io, {encoded('abc.def-1')}"))
    assert token == "abc.def-1"
    assert request.headers["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io"
    token, request = websocket_token(upgrade(encoded("only")))
    assert token == "only" and "Sec-WebSocket-Protocol" not in request.headers


def test_no_token_or_no_upgrade_leaves_the_request_alone() -> None:
    original = upgrade("v4.channel.k8s.io")
    assert websocket_token(original) == ("", original)
    plain = make_mocked_request("GET", "/api", headers={
        "Sec-WebSocket-Protocol": encoded("x")})
    assert websocket_token(plain) == ("", plain)


@pytest.mark.parametrize("offered", [
    WEBSOCKET_TOKEN_PROTOCOL + "***", WEBSOCKET_TOKEN_PROTOCOL,
    f"{encoded('a')}, {encoded('b')}", WEBSOCKET_TOKEN_PROTOCOL + "_w"])
def test_bad_token_protocols_are_unauthorized(offered: str) -> None:
    with pytest.raises(errors.Unauthorized):
        websocket_token(upgrade(offered))


def test_public_paths_are_exactly_the_console_and_health() -> None:
    assert public_path("/ui") and public_path("/ui/") and public_path("/ui/js/main.js")
    assert public_path("/healthz")
    for path in ("/uix", "/api", "/apis/ui", "/", "/metrics"):
        assert not public_path(path), path
