"""``keyturn serve``: the public and admin listeners in one process, or N worker processes.

The parent binds both sockets, prepares shared state once (migrations, generated
secrets, the first signing key), then runs the listeners itself (one worker) or hands
the sockets to N spawned workers. Each worker serves both listeners from one event loop
and one `KeyturnState`. SIGTERM/SIGINT stop accepting, let in-flight requests finish
(for at most ``shutdown_timeout`` seconds, then they are cancelled and answer 503; a write
whose body was read gets ``shutdown_write_timeout`` more), stop the pollers and dispose of
the database engine. Each listener's connection limits and timeouts are in
`keyturn.server.listeners`.

With N workers the runner gives them one fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed when
the server stops) so ``/metrics`` sums every worker's counters (`keyturn.server.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from keyturn.config import Settings
from keyturn.errors import KeyturnError
from keyturn.server.app import build_admin_app, build_public_app
from keyturn.server.listeners import ListenerLimits, ListenerServer, protocol_for
from keyturn.server.logs import configure_logging
from keyturn.server.metrics import clean_multiprocess_dir
from keyturn.server.state import KeyturnState, is_loopback

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "ServeError",
    "bind",
    "check_admin_exposure",
    "issuer_message",
    "ready_message",
    "serve",
    "settle_heap",
]

logger = logging.getLogger("keyturn.server")

#: Allocations (less deallocations) of container objects between two young-generation
#: collections once serving (CPython's default is 700): see `settle_heap`.
GC_YOUNG_THRESHOLD = 10_000


class ServeError(KeyturnError):
    """The server cannot start as configured (the message says why and what to do)."""


def _url(host: str, port: int, prefix: str = "") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix}"


def ready_message(settings: Settings, sockets: dict[str, socket.socket]) -> str:
    """The one line logged once every listener of a process accepts connections."""
    parts = []
    for name, sock in sockets.items():
        host, port = sock.getsockname()[:2]
        browse = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104
        parts.append(
            f"{name} {_url(host, port)} (docs at {_url(browse, port, settings.url_prefix)}/docs)"
        )
    return f"keyturn ready: {', '.join(parts)}"


def issuer_message(settings: Settings) -> str:
    """Which issuer tokens carry, where that came from, and how to change it."""
    source = settings.source("issuer")
    origin = "the default" if source == "default" else source
    return (
        f"tokens are issued by {settings.issuer} ({origin}); verifiers must expect this "
        "issuer: set KEYTURN_ISSUER to the URL clients use"
    )


def check_admin_exposure(settings: Settings) -> None:
    """Refuse an admin listener off loopback without credentials (T-OPS-02).

    Raises:
        ServeError: the admin listener would be reachable by others and unauthenticated.
    """
    if settings.disable_admin_api:
        return
    if not is_loopback(settings.admin_host) and settings.admin_token is None:
        raise ServeError(
            f"the admin listener is bound to {settings.admin_host}, which is not loopback, "
            "and KEYTURN_ADMIN_TOKEN is not set: set a token or bind it to 127.0.0.1"
        )


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0 picks a free one).

    Raises:
        ServeError: the address is taken or not ours.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(
    app: Any, settings: Settings, limits: ListenerLimits, *, trust_proxies: bool
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,  # it would log query strings (T-LOG-02); Keyturn logs its own
        server_header=False,
        date_header=True,
        proxy_headers=trust_proxies,
        forwarded_allow_ips=settings.forwarded_allow_ips if trust_proxies else "",
        timeout_graceful_shutdown=settings.shutdown_timeout,
        http=protocol_for(limits),
    )


def _listener(app: Any, state: KeyturnState, name: str) -> ListenerServer:
    """A listener's server; the admin one never reads X-Forwarded-For (T-OPS-03)."""
    limits = ListenerLimits.from_settings(state.settings, name, state.metrics.connection_refused)
    config = _config(app, state.settings, limits, trust_proxies=name == "public")
    return ListenerServer(config, limits)


async def _serve(
    settings: Settings, sockets: dict[str, socket.socket], *, announce: bool = True
) -> None:
    state = await KeyturnState.open(settings)
    servers: list[tuple[ListenerServer, socket.socket]] = []
    try:
        public = _listener(build_public_app(state), state, "public")
        servers.append((public, sockets["public"]))
        if "admin" in sockets:
            admin = _listener(build_admin_app(state), state, "admin")
            servers.append((admin, sockets["admin"]))
        started = 0

        def one_started() -> None:
            nonlocal started
            started += 1
            if started == len(servers) and announce:
                logger.info(ready_message(settings, sockets))
                logger.info(issuer_message(settings))

        for server, _ in servers:
            server.on_started = one_started
        settle_heap()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stop, [server for server, _ in servers])
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
    finally:
        await state.close()
        logger.info("keyturn stopped: requests finished, pollers stopped, database released")


def settle_heap() -> None:
    """Keep the garbage collector's pauses out of request latency (issue 19).

    After start-up the process holds over 100,000 objects that live as long as it does
    (modules, the app, SQLAlchemy's compiled statements, pydantic's validators). CPython's
    full collections traversed them all, each pausing the event loop (and so every request
    in flight) for tens of milliseconds on a busy core: the p99 of the token routes.
    `gc.freeze` moves them out of the collector's generations, once; the young-generation
    threshold is raised so that the objects a request leaves behind are collected in
    fewer, shorter passes (most die by reference counting before any pass).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _stop(servers: list[ListenerServer]) -> None:
    for server in servers:
        server.should_exit = True


def _run_loop(
    settings: Settings, sockets: dict[str, socket.socket], *, announce: bool = True
) -> None:
    try:
        import uvloop  # noqa: PLC0415 -- optional speed-up, part of uvicorn[standard]
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(settings, sockets, announce=announce))
    else:
        uvloop.run(_serve(settings, sockets, announce=announce))


def _worker(settings: Settings, sockets: dict[str, socket.socket], announce: bool) -> None:
    configure_logging(settings.log_level, settings.log_format)
    _run_loop(settings, sockets, announce=announce)


async def _prepare(settings: Settings) -> None:
    """Migrate, generate secrets and the first signing key once, before workers start."""
    state = await KeyturnState.open(settings, background=False)
    await state.close()


def serve(settings: Settings, *, workers: int | None = None) -> None:
    """Run Keyturn until SIGINT/SIGTERM.

    Logging is configured here (``log_level``, ``log_format``) for every process.

    Raises:
        ServeError: unsafe admin exposure, or a port that cannot be bound.
        KeyturnError: storage, secrets or keys are unusable.
    """
    configure_logging(settings.log_level, settings.log_format)
    check_admin_exposure(settings)
    if settings.legacy_admin_on_public and not settings.disable_admin_api:
        logger.warning(
            "KEYTURN_LEGACY_ADMIN_ON_PUBLIC is on: /register_key and /is_key_registered are "
            "served on the public listener without credentials (JWThenticator one-port mode)"
        )
    sockets = {"public": bind(settings.public_host, settings.public_port)}
    if not settings.disable_admin_api:
        sockets["admin"] = bind(settings.admin_host, settings.admin_port)
    count = workers or settings.workers
    try:
        if count == 1:
            _run_loop(settings, sockets)
            return
        asyncio.run(_prepare(settings))
        context = multiprocessing.get_context("spawn")
        processes = [
            # The first worker announces the server ready; the others stay quiet.
            context.Process(target=_worker, args=(settings, sockets, index == 0), daemon=False)
            for index in range(count)
        ]
        with _metrics_directory() as directory:
            _run_workers(processes, on_exit=lambda pid: clean_multiprocess_dir(directory, pid))
    finally:
        for sock in sockets.values():
            sock.close()


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers, removed afterwards.

    Set in this process's environment, which spawned workers inherit; a stale directory
    would add a previous run's counts to this one's.
    """
    variable = "PROMETHEUS_MULTIPROC_DIR"
    previous = os.environ.get(variable)
    directory = tempfile.mkdtemp(prefix="keyturn-metrics-")
    os.environ[variable] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
        shutil.rmtree(directory, ignore_errors=True)


def _run_workers(processes: list[Any], on_exit: Callable[[int], None] = lambda pid: None) -> None:
    """Start the workers, forward SIGTERM/SIGINT to them, and wait for all to exit.

    The signal handlers are in place before the first worker starts, so a SIGTERM that
    comes early never leaves a worker behind.

    A worker that exits on its own (crashed, OOM-killed) is not replaced: the others are
    stopped too and `ServeError` makes the command exit non-zero, so the supervisor
    (systemd, Kubernetes) restarts the whole server instead of it running short-handed.

    Raises:
        ServeError: a worker exited without being asked to.
    """
    stopping = False
    crashed: list[str] = []

    def stop_all() -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker shuts down gracefully

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pending = []
    for process in processes:
        if stopping:
            break
        process.start()
        pending.append(process)
    while pending:
        ready = multiprocessing.connection.wait([process.sentinel for process in pending])
        for process in [process for process in pending if process.sentinel in ready]:
            process.join()
            pending.remove(process)
            on_exit(process.pid)
            if not stopping:
                crashed.append(f"worker {process.pid} exited with code {process.exitcode}")
                logger.error("%s; stopping the other workers", crashed[-1])
                stopping = True
                stop_all()
    if crashed:
        raise ServeError(f"{crashed[0]} (a worker crashed or was killed); the server stopped")
