"""``make run``: the Resayil deployment on embedded defaults, offline.

Starts the bundled simulators: Ollama (local models), the cloud host (failover and cloud models), MyFatoorah
(so Buy on the dashboard runs the whole sandbox payment: hosted page, return, signed webhooks) and a WhatsApp
sink (every notification, readable on its page). Then it migrates a SQLite database under ``var/``, makes a
demo user with credits and a fresh API key and an admin (both with fresh passwords, printed), prints a
copy-paste ``curl`` line, and serves the gateway with its portal (the landing page at
http://127.0.0.1:8080/) until Ctrl-C.
Nothing here reaches the internet.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from pathlib import Path

from aiohttp import web
from resayil_cloud.simulator import SIMULATOR_API_KEY
from resayil_cloud.simulator import start_simulator as start_cloud
from resayil_myfatoorah.simulator import SIMULATOR
from resayil_myfatoorah.simulator import start_simulator as start_myfatoorah
from resayil_ollama.simulator import start_simulator
from resayil_whatsapp.sink import start_sink
from sqlalchemy import update

from resayil_gateway.app import create_app
from resayil_gateway.auth.passwords import hash_password
from resayil_gateway.bootstrap import gateway_from_config
from resayil_gateway.gateway import Gateway
from resayil_gateway.logs import AccessLogger, configure_logging
from resayil_gateway.store import upgrade
from resayil_gateway.store.tables import accounts

HERE = Path(__file__).parent
DEMO_EMAIL = "demo@resayil.local"
ADMIN_EMAIL = "admin@resayil.local"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def _fresh_password(gateway: Gateway, account_id: int) -> str:
    """A new random password for a demo account, so every run can print working logins (demo only: the
    gateway itself never shows or resets a password)."""
    password = secrets.token_urlsafe(9)
    async with gateway.store.begin() as conn:
        await conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(password_hash=hash_password(password))
        )
    return password


async def _seed(gateway: Gateway) -> tuple[str, str, str]:
    """The demo user's new key and the passwords of the demo user and the admin (made on the first run)."""
    admin = await gateway.accounts.find(ADMIN_EMAIL)
    if admin is None:
        admin = await gateway.accounts.create(
            ADMIN_EMAIL, "+96550000001", secrets.token_urlsafe(12), name="Admin", role="admin"
        )
    user = await gateway.accounts.find(DEMO_EMAIL)
    if user is None:
        user = await gateway.accounts.create(DEMO_EMAIL, "+96550000002", secrets.token_urlsafe(12), name="Demo")
        await gateway.plans.activate(user.id, "basic", ref=f"demo-plan:{user.id}", actor="demo")
        await gateway.ledger.grant(user.id, 1000, bucket="topup", ref=f"demo-topup:{user.id}", reason="topup")
    for key in await gateway.keys.list(user.id):
        await gateway.keys.revoke(key.prefix, account_id=user.id, actor="demo")
    key = (await gateway.keys.create(user.id, "demo", actor="demo")).secret
    return key, await _fresh_password(gateway, user.id), await _fresh_password(gateway, admin.id)


async def make_app() -> web.Application:
    """Simulators first, then the gateway pointed at them."""
    sim_port = 11434 if _port_free(11434) else 0
    runner, sim_url = await start_simulator(port=sim_port, first_token_ms=120, tokens_per_second=40)
    os.environ["RESAYIL_OLLAMA__URL"] = sim_url
    os.environ.setdefault("RESAYIL_CONFIG", str(HERE / "resayil.toml"))
    # A fresh token and webhook secret each run: the simulator and the gateway share them, nothing else does.
    pay_token, pay_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    pay_runner, pay_url = await start_myfatoorah(port=0, api_token=pay_token, webhook_secret=pay_secret)
    os.environ.update(
        {
            "RESAYIL_MYFATOORAH__ENABLED": "true",
            "RESAYIL_MYFATOORAH__BASE_URL": pay_url,
            "RESAYIL_MYFATOORAH__API_TOKEN": pay_token,
            "RESAYIL_MYFATOORAH__WEBHOOK_SECRET": pay_secret,
        }
    )
    cloud_runner, cloud_url = await start_cloud(port=0, latency_ms=200, tokens_per_second=60)
    sink_token = secrets.token_urlsafe(16)
    sink_runner, sink_url = await start_sink(port=0, token=sink_token)
    os.environ.update(
        {
            "RESAYIL_CLOUD__URL": cloud_url,
            "RESAYIL_CLOUD__API_KEY": SIMULATOR_API_KEY,
            "RESAYIL_WHATSAPP__ENABLED": "true",
            "RESAYIL_WHATSAPP__BASE_URL": sink_url,
            "RESAYIL_WHATSAPP__TOKEN": sink_token,
        }
    )
    gateway = gateway_from_config()
    base = gateway.settings.gateway.public_url
    pay_runner.app[SIMULATOR].configure({"webhook_url": f"{base}/billing/webhooks/myfatoorah"})
    await upgrade(gateway.store)
    key, user_password, admin_password = await _seed(gateway)
    print(
        f"""
  Resayil Gateway (demo) — {base}
  Simulators: Ollama {sim_url}   cloud {cloud_url}   MyFatoorah {pay_url}
  WhatsApp messages sent by the gateway: {sink_url}/

  Demo API key (shown once): {key}

  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "llama3.2:3b", "messages": [{{"role": "user", "content": "مرحبا"}}], "stream": true}}'

  Python:  OpenAI(base_url="{base}/v1", api_key="{key}")
  Portal:  {base}/   (Arabic by default; English from the top bar)
  User:    {DEMO_EMAIL} / {user_password}
  Admin:   {ADMIN_EMAIL} / {admin_password}   ({base}/admin)
  Buy:     {base}/billing/top-up   (the MyFatoorah simulator's page: Pay or Decline; no real money moves)
  Stop:    Ctrl-C
""",
        flush=True,
    )
    app = create_app(gateway)

    async def stop_simulator(_app: web.Application) -> None:
        for simulator in (sink_runner, cloud_runner, pay_runner, runner):
            await simulator.cleanup()

    app.on_cleanup.append(stop_simulator)
    return app


def main() -> None:
    """Serve until interrupted."""
    configure_logging("text", os.environ.get("RESAYIL_LOG_LEVEL", "INFO"))
    port = int(os.environ.get("RESAYIL_GATEWAY__PORT", "8080"))
    if not _port_free(port):
        sys.exit(f"error: port {port} is in use (set RESAYIL_GATEWAY__PORT to another)")
    web.run_app(
        make_app(), host="127.0.0.1", port=port, handler_cancellation=True, access_log_class=AccessLogger, print=None
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
