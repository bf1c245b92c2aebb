"""A live deployment for end-to-end tests: the Ollama simulator and the gateway on real sockets, served
from a background thread so the synchronous ``openai`` client can call them too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web
from resayil_ollama.simulator import SIMULATOR, start_simulator

from resayil_gateway.app import create_app
from resayil_gateway.gateway import Gateway
from resayil_gateway.testing import build_gateway

T = TypeVar("T")

CATALOG = {
    "llama3.2:3b": {"backend": "local", "size": "small"},
    "qwen2.5-coder:14b": {"backend": "local", "size": "medium"},
}


class LiveDeployment:
    """The simulator and a gateway on 127.0.0.1, in their own event loop thread."""

    def __init__(
        self, database_url: str, redis_url: str, overrides: Mapping[str, Any] | None = None, **simulator: Any
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.overrides = dict(overrides or {})
        self.simulator_config = simulator
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-deployment", daemon=True)
        self.gateway: Gateway
        self.base_url = ""
        self.simulator_url = ""
        self._runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the deployment's loop (the gateway's connections live there) and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> LiveDeployment:
        """Start both servers; returns self."""
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        sim_runner, self.simulator_url = await start_simulator(port=0, **self.simulator_config)
        self._runners.append(sim_runner)
        overrides = {
            "ollama": {"url": self.simulator_url, "max_concurrency": 16, "discover": True},
            "models": {"catalog": CATALOG},
            "plans": {"basic": {"requests_per_minute": 1_000_000}},  # rate limits have their own tests
        }
        for section, values in self.overrides.items():
            overrides[section] = {**overrides.get(section, {}), **values}
        self.gateway = build_gateway(
            self.database_url,
            redis_url=self.redis_url,
            overrides=overrides,
            load_entrypoints=True,
            env={"RESAYIL_DISABLE_PLUGINS": "hello"},
        )
        runner = web.AppRunner(create_app(self.gateway), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        for backend in self.gateway.backends.values():  # discovery ran at start; make sure it has
            refresh = getattr(backend, "refresh_models", None)
            if refresh is not None:
                await refresh()

    @property
    def simulator_stats(self) -> Any:
        """The simulator's request counters."""
        return self._runners[0].app[SIMULATOR].stats

    def stop(self) -> None:
        """Stop both servers and the loop."""
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
