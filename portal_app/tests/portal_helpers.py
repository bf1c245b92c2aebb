"""Helpers for portal tests: fill in forms the way a browser would."""

from __future__ import annotations

import re
from typing import Any

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def register(client: Any, email: str = "sara@example.com", phone: str = "51234567", **extra: str) -> Any:
    """Fill in the sign-up form as a browser would."""
    page = await (await client.get("/register")).text()
    data = {"csrf_token": csrf_of(page), "name": "Sara", "email": email, "country": "+965", "phone": phone}
    data.update({"password": PASSWORD, **extra})
    return await client.post("/register", data=data, allow_redirects=False)


async def log_in(client: Any, login: str, password: str = PASSWORD, remember: bool = False) -> Any:
    """Fill in the login form."""
    page = await (await client.get("/login")).text()
    data = {"csrf_token": csrf_of(page), "login": login, "password": password}
    if remember:
        data["remember"] = "on"
    return await client.post("/login", data=data, allow_redirects=False)


async def post_form(client: Any, page_path: str, action: str, data: dict[str, str]) -> Any:
    """Post a form on ``page_path`` with that page's CSRF token."""
    page = await (await client.get(page_path)).text()
    return await client.post(action, data={"csrf_token": csrf_of(page), **data}, allow_redirects=False)
