"""The websocket port-forward's ``ports`` parameter (the e2e test drives the protocol)."""

from __future__ import annotations

import pytest

from atoll.agent.streams.portforward_ws import MAX_PORTS, BadPorts, parse_ports


def test_ports_repeated_or_comma_separated() -> None:
    assert parse_ports(["80", "8080,9090"]) == [80, 8080, 9090]


@pytest.mark.parametrize("values", [[], [""], ["0"], ["65536"], ["http"], ["80,-1"],
                                    [",".join(["1"] * (MAX_PORTS + 1))]])
def test_bad_ports_are_refused(values: list[str]) -> None:
    with pytest.raises(BadPorts):
        parse_ports(values)
