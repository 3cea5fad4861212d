"""One listener served for real (uvicorn on a loopback socket) from a background thread.

For tools that speak HTTP themselves (schemathesis' engine): the test thread stays
synchronous while the app, its `KeyturnState` and uvicorn run on the thread's own event
loop. Start-up waits for uvicorn's ``started`` flag with a deadline; closing stops uvicorn,
closes the state and joins the thread, so nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import uvicorn

from keyturn.config import Settings
from keyturn.core.passwords import PasswordHasher, PasswordParameters
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import START

__all__ = ["LiveListener", "live_listener"]

T = TypeVar("T")
#: How long uvicorn may take to start or stop on a loaded machine.
DEADLINE = 20.0
#: argon2id parameters cheap enough for hundreds of logins in a test.
CHEAP_ARGON2 = PasswordParameters(memory_cost=8, time_cost=1)


class LiveListener:
    """A listener answering on ``base_url``; its state is usable through `call`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: KeyturnState, base_url: str) -> None:
        self.loop = loop
        self.state = state
        self.base_url = base_url

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the listener's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(DEADLINE)


@contextmanager
def live_listener(listener: str, settings: Settings) -> Iterator[LiveListener]:
    """Serve the ``listener`` ("public" or "admin") app over ``settings`` until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"live-{listener}", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(DEADLINE)

    try:
        state = run(
            KeyturnState.open(
                settings,
                background=False,
                clock=FakeClock(START),
                password_hasher=PasswordHasher(CHEAP_ARGON2),
            )
        )
        try:
            app = build_public_app(state) if listener == "public" else build_admin_app(state)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            config = uvicorn.Config(
                app, lifespan="off", log_config=None, access_log=False, timeout_keep_alive=30
            )
            server = uvicorn.Server(config)
            serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop)
            end = time.monotonic() + DEADLINE
            while not server.started:
                if serving.done():
                    serving.result()  # raises what stopped it
                    raise AssertionError("uvicorn stopped before it started")
                if time.monotonic() > end:
                    raise AssertionError(f"uvicorn not started after {DEADLINE} s")
                time.sleep(0.01)  # poll interval, not a wait for an event
            try:
                yield LiveListener(loop, state, f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True
                serving.result(DEADLINE)
                sock.close()
        finally:
            run(state.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE)
        loop.close()
