"""The Host check of a service on a loopback address (face_search.service.host_check and
its use in request_guard): loopback names pass, with or without a port; any other name, a
DNS rebinding page's among them, is refused with a 421 in the service's JSON shape."""

from __future__ import annotations

import http.client

import pytest

from face_search.service import server as server_module
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
    ("example.org", False), ("127.example", False), ("::ffff:127.0.0.1", True),
    ("::ffff:10.0.0.1", False)])
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


# ------------------------------------------------------------------ the bound address decides
# Names that resolve to an address, as /etc/hosts would ("vm" -> 127.0.0.1 on some machines;
# "localhost" is on every one, but is also known by its text): the server binds the address.
NAMES = {"vm.test": "127.0.0.1", "public.test": "0.0.0.0"}


@pytest.fixture
def resolving(monkeypatch):
    """``_listen`` binds the address a test name resolves to (any other host as given)."""
    listen = server_module._listen
    monkeypatch.setattr(server_module, "_listen",
                        lambda host, port: listen(NAMES.get(host, host), port))


def get_status(server, host: str) -> int:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.putrequest("GET", "/", skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["vm.test", "127.1", "localhost"])
def test_a_server_bound_to_loopback_by_any_name_refuses_other_hosts(resolving, host):
    """DNS rebinding: ``serve --host vm`` (vm -> 127.0.0.1) or ``--host 127.1`` was bound to
    loopback but decided "not loopback" from the text, and answered ``Host: evil.example``."""
    server = server_module.make_server(None, host, 0, quiet=True)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.loopback
        server.serve_in_thread()
        assert get_status(server, "evil.example") == 421
        assert get_status(server, f"127.0.0.1:{server.server_address[1]}") == 200
        assert get_status(server, "localhost") == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_on_all_addresses_by_name_checks_no_host(resolving):
    server = server_module.make_server(None, "public.test", 0, quiet=True)
    try:
        assert server.server_address[0] == "0.0.0.0" and not server.loopback
        server.serve_in_thread()
        assert get_status(server, "evil.example") == 200
    finally:
        server.shutdown()
        server.server_close()


class FakeSearcher:
    index_dir = "/indexes/faces"

    def __init__(self, *args, **kwargs) -> None:
        pass


class FakeService:
    def __init__(self, *args) -> None:
        pass

    def info(self) -> dict:
        return {"count": 3, "identities": 2, "num_bits": 12, "detector": "center"}


def test_serve_warns_only_when_the_bound_address_is_not_loopback(resolving, monkeypatch,
                                                                 capsys):
    """The warning "anyone who can reach this address" went by the --host text too: shown
    for vm (loopback), and it names the address bound when a name was given."""
    import face_search.searcher

    monkeypatch.setattr(face_search.searcher, "FaceSearcher", FakeSearcher)
    monkeypatch.setattr(server_module, "SearchService", FakeService)
    monkeypatch.setattr(server_module.SearchServer, "serve_forever", lambda self: None)
    monkeypatch.setattr(server_module, "_log_requests_to_stderr", lambda: None)
    for host, warning in [
            ("vm.test", ""), ("127.1", ""), ("localhost", ""),
            ("public.test", "warning: listening on public.test (0.0.0.0): anyone who can "
                            "reach this address can search the gallery and see its faces\n"),
            ("0.0.0.0", "warning: listening on 0.0.0.0: anyone who can reach this address "
                        "can search the gallery and see its faces\n")]:
        server_module.serve("/indexes/faces", host=host, port=0)
        out, err = capsys.readouterr()
        assert out.startswith("serving 3 faces of 2 identities (12-bit codes, detector "
                              "center) from /indexes/faces at http://"), out
        assert out.endswith("(Ctrl-C to stop)\nstopped\n") and err == warning, (host, err)
