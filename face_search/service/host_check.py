"""Which Host headers a service listening on a loopback address answers: loopback names only.

Why: a page on another site can make a browser send requests to 127.0.0.1 under its own
name (DNS rebinding: evil.example first resolves to the attacker's server, then to
127.0.0.1). The browser then treats the answers as evil.example's own, so the page could
search the gallery and read its faces. Such a request carries ``Host: evil.example``; one
the user makes carries ``localhost`` or a loopback address, which is all a server bound to
a loopback address answers. On any other address the check is off: whoever can reach the
address can search anyway, and the service cannot know the names it is reached by.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether a listening address (IP, IPv6 with or without brackets, or ``localhost``) is
    a loopback address: 127.0.0.0/8, ::1 or ::ffff:127.x.y.z. Give it the address a socket
    is bound to (``getsockname()[0]``): any other name is False here, whatever it resolves
    to."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4's loopback
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_host(header: str) -> bool:
    """Whether a Host header names the loopback interface: ``localhost``, ``127.0.0.1``
    (any 127.x.y.z) or ``[::1]``, each with an optional ``:port``."""
    name = header.strip().lower()
    if name.startswith("["):  # an IPv6 literal: [::1] or [::1]:8080
        literal, bracket, port = name[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and _port(port[1:]))):
            return False
        try:
            return ipaddress.IPv6Address(literal).is_loopback
        except ValueError:
            return False
    host, colon, port = name.partition(":")
    if colon and not _port(port):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def _port(digits: str) -> bool:
    """Whether the text after a Host's colon is a port number."""
    return 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()
