"""The one log line fail2ban reads (``examples/fail2ban/``), and the client address it names.

Every authentication failure writes, on the ``resayil.auth`` logger at WARNING::

    AUTH_FAILURE ip=<client ip> kind=<api_key|password> reason=<code> path=<path>

The address is the direct peer's, unless that peer is one of ``gateway.trusted_proxies`` (CIDR list): then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, so a client cannot forge its address by
sending the header itself.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from functools import lru_cache

from aiohttp import web

auth_log = logging.getLogger("resayil.auth")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/@+-]")


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def forwarded_client(peer: str, forwarded_for: list[str], trusted: tuple[str, ...]) -> str:
    """The client's address given the direct ``peer``, the ``X-Forwarded-For`` values and the trusted proxies."""
    networks = _networks(tuple(trusted))
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the header: keep the last address we could trust
        client = hop
        if not _trusted(hop, networks):
            break
    return client


def client_ip(request: web.Request, trusted: tuple[str, ...]) -> str:
    """The address of the client behind ``request``, given ``gateway.trusted_proxies`` (see the module doc)."""
    peer = request.remote or "-"
    if not trusted:
        return peer
    return forwarded_client(peer, request.headers.getall("X-Forwarded-For", []), trusted)


def _field(value: str) -> str:
    return _UNSAFE.sub("_", value)[:200] or "-"


def log_auth_failure(ip: str, kind: str, reason: str, path: str) -> None:
    """Write the ``AUTH_FAILURE`` line (fields are cleaned so the line cannot be forged or split)."""
    auth_log.warning(
        "AUTH_FAILURE ip=%s kind=%s reason=%s path=%s", _field(ip), _field(kind), _field(reason), _field(path)
    )


def record_login_failure(request: web.Request, trusted: tuple[str, ...], reason: str = "bad_credentials") -> None:
    """For the portal: log a failed web login (wrong password, unknown account, throttled) for fail2ban;
    ``trusted`` is ``gateway.trusted_proxies``."""
    log_auth_failure(client_ip(request, trusted), "password", reason, request.path)
