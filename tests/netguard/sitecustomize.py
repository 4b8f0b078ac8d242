"""Loopback-only network guard, for the test process and every Python process it starts.

The test fixture ``_no_network`` (conftest.py) installs :func:`install` in the test process and puts
this folder on ``PYTHONPATH``, so Python runs this file at the start-up of each child (``bench run``
subprocesses, Dask worker processes, torchrun ranks) and installs the guard there too. A connection
(or a UDP datagram) to anything but loopback raises, and is also written to the file named by
``MRIBENCH_NETGUARD_LOG``, so the fixture fails the test even where a library swallows the error
(Dask's own-IP probe, for one, catches ``OSError`` and falls back).
"""

from __future__ import annotations

import ipaddress
import os
import socket

_LOG_ENV = "MRIBENCH_NETGUARD_LOG"


def is_loopback(sock: socket.socket, address) -> bool:
    """True for Unix sockets and loopback IPs; a host name other than localhost is refused, since
    it could resolve anywhere."""
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return False
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _refuse(what: str, address) -> None:
    log = os.environ.get(_LOG_ENV)
    message = f"{what} to {address!r} from pid {os.getpid()}: only loopback is allowed in tests"
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(message + "\n")
    raise AssertionError(f"test tried to {message}")


def guarded_methods(real=socket.socket) -> dict:
    """Replacements for ``socket.socket.connect / connect_ex / sendto`` that refuse non-loopback peers."""
    connect, connect_ex, sendto = real.connect, real.connect_ex, real.sendto

    def guarded_connect(self, address):
        if not is_loopback(self, address):
            _refuse("connect", address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if not is_loopback(self, address):
            _refuse("connect", address)
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        address = args[-1] if args else None
        if address is not None and not is_loopback(self, address):
            _refuse("send a datagram", address)
        return sendto(self, data, *args)

    return {"connect": guarded_connect, "connect_ex": guarded_connect_ex, "sendto": guarded_sendto}


def install(setattr_=setattr) -> None:
    """Patch ``socket.socket``; ``setattr_`` may be pytest's ``monkeypatch.setattr`` so it is undone."""
    for name, fn in guarded_methods().items():
        setattr_(socket.socket, name, fn)


if os.environ.get(_LOG_ENV):  # started by a test: guard this process too
    install()
