"""Hook implementations: the ``[portal]`` settings section and the portal's routes and static files."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from resayil_gateway import hookimpl
from resayil_gateway.gateway import Gateway

from .admin_views import admin_routes
from .auth_views import auth_routes
from .context import STATIC_PREFIX, Portal
from .dashboard_views import dashboard_routes
from .landing_views import landing_routes
from .settings import PortalSettings


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[portal]`` section."""
    register("portal", PortalSettings)


@hookimpl
def register_routes(gateway: Gateway) -> list[web.AbstractRouteDef]:
    """The landing page, sign-up and login, the dashboards and the static files (CSS, fonts, one script)."""
    portal = Portal(gateway)
    static = Path(str(resources.files("resayil_portal").joinpath("static")))
    return [
        *landing_routes(portal),
        *auth_routes(portal),
        *dashboard_routes(portal),
        *admin_routes(portal),
        web.static(STATIC_PREFIX, static),
    ]
