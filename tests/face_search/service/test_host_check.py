"""The Host check of a service on a loopback address (face_search.service.host_check and
its use in request_guard): loopback names pass, with or without a port; any other name, a
DNS rebinding page's among them, is refused with a 421 in the service's JSON shape."""

from __future__ import annotations

import pytest

from face_search.service.host_check import is_loopback, loopback_host
from face_search.service.request_guard import refusal


@pytest.mark.parametrize("header", [
    "localhost", "LocalHost", "localhost:8080", "127.0.0.1", "127.0.0.1:1", "127.0.0.2:65535",
    "[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:80", " localhost "])
def test_loopback_hosts_pass(header):
    assert loopback_host(header)


@pytest.mark.parametrize("header", [
    "", "evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.evil.example",
    "localhost:", "localhost:http", "localhost:123456", "127.0.0.1:80:80", "[::1]8080",
    "[::1", "::1", "[::2]:80", "10.0.0.1", "0.0.0.0:8080", "127.1", "0177.0.0.1",
    "localhost\x00.evil.example", "[::ffff:127.0.0.1]x"])
def test_other_hosts_are_refused(header):
    assert not loopback_host(header)


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.org", False), ("127.example", False)])
def test_listening_addresses(address, loopback):
    assert is_loopback(address) is loopback


def scope(host: bytes | None) -> dict:
    headers = [(b"host", host)] if host is not None else []
    return {"type": "http", "http_version": "1.1", "method": "GET", "raw_path": b"/",
            "query_string": b"", "headers": headers + [(b"accept", b"*/*")]}


def test_the_guard_refuses_another_host_only_when_told_to():
    error = refusal(scope(b"evil.example:8080"), loopback_hosts_only=True)
    assert error is not None and (error.status, error.kind) == (421, "misdirected_request")
    assert str(error) == ("this service listens on a loopback address and answers only "
                          "requests for localhost, 127.0.0.1 or [::1], not for "
                          "'evil.example:8080'")
    assert refusal(scope(b"evil.example:8080"), loopback_hosts_only=False) is None
    assert refusal(scope(b"127.0.0.1:8080"), loopback_hosts_only=True) is None
    assert refusal(scope(None), loopback_hosts_only=True) is None  # HTTP/1.0: no Host
    twice = scope(b"localhost")
    twice["headers"].append((b"Host", b"evil.example"))
    assert refusal(twice, loopback_hosts_only=True).status == 421
