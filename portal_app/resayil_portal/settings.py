"""The ``[portal]`` settings section."""

from __future__ import annotations

from pydantic import Field

from resayil_gateway.config import Section


class PortalSettings(Section):
    """``[portal]``: login throttling, page sizes and the phone country code offered first."""

    login_max_failures: int = Field(5, ge=1, description="failed logins per IP or per account per window")
    login_window_s: int = Field(900, ge=1)
    registrations_per_ip: int = Field(5, ge=1, description="sign-up attempts per IP per window")
    usage_page_size: int = Field(25, ge=5, le=200)
    default_country_code: str = Field("+965", pattern=r"^\+[0-9]{1,4}$")
