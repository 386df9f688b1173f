"""The channel protocol's client messages: BINARY and TEXT frames, resize payloads."""

from __future__ import annotations

from types import SimpleNamespace

from aiohttp import WSMsgType

from atoll.agent.streams.channels import CLOSE, RESIZE, STDIN, decode, window_size


def test_binary_and_text_frames_carry_a_channel() -> None:
    assert decode(SimpleNamespace(type=WSMsgType.BINARY, data=b"\x00hi")) == (STDIN, b"hi")
    assert decode(SimpleNamespace(type=WSMsgType.TEXT, data="\x00héllo")) == \
        (STDIN, "héllo".encode())
    assert decode(SimpleNamespace(type=WSMsgType.TEXT, data="\xff\x00")) == (CLOSE, b"\x00")
    assert decode(SimpleNamespace(type=WSMsgType.TEXT, data="\u0100x")) is None
    assert decode(SimpleNamespace(type=WSMsgType.BINARY, data=b"")) is None
    assert decode(SimpleNamespace(type=WSMsgType.PING, data=b"\x00")) is None


def test_window_sizes() -> None:
    assert window_size(b'{"Width": 120, "Height": 40}') == (40, 120)
    assert window_size(b'{"Width": 70000, "Height": 40}') is None
    assert window_size(b'{"Width": "x"}') is None
    assert window_size(b"not json") is None
    assert RESIZE == 4
