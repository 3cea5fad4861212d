"""Side by side on one core: Keyturn, node-oidc-provider and the raw-ASGI floor (issue 19).

Usage: python bench/bench_peers.py [--duration 10] [--backend sqlite|postgresql|both]
                                   [--rows N] [--oidc-provider 9] [--no-node]
       python bench/bench_peers.py --grow 4 [--grow-seconds 10]   # the plan-cache defect

Every server runs pinned to one core (``taskset -c 0``), wrk on the other (``taskset -c
1``), 32 connections, one route at a time, after a discarded warm-up; the machinery
(wrk driver, CPU accounting, server processes) is ``bench_http.py``'s. Tokens are ES256
everywhere.

* Keyturn (``keyturn serve`` from this virtualenv, rate limiter off, a throwaway
  PostgreSQL database or SQLite file): ``POST /v1/token`` client_credentials with HTTP
  Basic (a key made through ``POST /v1/admin/keys``), legacy ``POST /authenticate``, and
  ``POST /v1/introspect`` of one of its access tokens (``KEYTURN_ADMIN_TOKEN`` as the
  bearer). ``--rows N`` first loads N keys and N refresh tokens (``load_rows.py``), for
  the size runs (10^3 against 10^6).
* node-oidc-provider (``--oidc-provider``, npm major, default 9; installed by this script
  into a temporary folder with ``npm install``; Node 20 runs it, with its "Unsupported
  runtime" warning: 9 asks for Node 22): ``bench/peers/oidc_provider.mjs``, in-memory
  adapter, client_credentials with JWT access tokens (resource indicators,
  ``accessTokenFormat: 'jwt'``) signed ES256, ``NODE_ENV=production``. Its introspection
  refuses JWT access tokens, so its introspection run sends an opaque one.
* The raw-ASGI floor (``raw_asgi.py``, Keyturn's uvicorn settings): the same form body
  as the token route, answered with a fixed JSON body.

Prints req/s, p50, p99, server and PostgreSQL CPU per request, and the ratios Keyturn /
node-oidc-provider and Keyturn / floor.

``--grow R`` measures the plan-cache defect instead: one Keyturn server on PostgreSQL
measures legacy ``/refresh`` on a near-empty table, then lives through R rounds; each
round grows ``refresh_tokens`` by running legacy
``/authenticate`` for ``--grow-seconds`` (one row per request) and, with ``--grow-rows
N``, by N more rows (``load_rows.py``, through another connection), then measures legacy
``/refresh`` (the batched refresh-token lookup with its key) and prints its req/s and
PostgreSQL CPU per request against the table's size. Flat is right; falling is the defect.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import bench_http as bh  # type: ignore[import-not-found]  # beside this file
import load_rows  # type: ignore[import-not-found]
from sqlalchemy.ext.asyncio import create_async_engine

from keyturn.storage.migrate import upgrade
from keyturn.storage.schema import DEFAULT_SCHEMA

FORM = "application/x-www-form-urlencoded"
NODE_SCRIPT = bh.BENCH_DIR / "peers" / "oidc_provider.mjs"
RAW_ASGI = bh.BENCH_DIR / "raw_asgi.py"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _post_env(body: str, authorization: str | None, content_type: str = FORM) -> dict[str, str]:
    env = {"BENCH_METHOD": "POST", "BENCH_BODY": body, "BENCH_CONTENT_TYPE": content_type}
    if authorization:
        env["BENCH_AUTHORIZATION"] = authorization
    return env


def _json_env(body: str) -> dict[str, str]:
    return _post_env(body, None, "application/json")


def _request(url: str, env: dict[str, str]) -> tuple[int, Any]:
    """The request wrk will send, once, with the standard library."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": env["BENCH_CONTENT_TYPE"]}
    if "BENCH_AUTHORIZATION" in env:
        headers["Authorization"] = env["BENCH_AUTHORIZATION"]
    request = urllib.request.Request(  # noqa: S310 -- loopback only
        url, data=env["BENCH_BODY"].encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def measure(server: bh.Server, route: str, path: str, env: dict[str, str], args: Any) -> dict:
    """One wrk run of ``path`` (a smoke request first: a route must answer 200)."""
    url = server.base_url + path
    status, answer = _request(url, env)
    if status != 200:
        raise RuntimeError(f"{server.label}: {path} answered {status}: {answer!r}")
    if args.warmup > 0:
        bh.run_wrk(url, env, args.warmup, args)
    profiler = None
    if args.py_spy:
        profiler = bh.start_profiler(server, argparse.Namespace(name=route), args)
    postgres = functools.partial(bh.postgres_cpu_ticks, server.database, reaped=server.reaps)
    server_before, postgres_before = server.cpu_seconds(), postgres()
    cores_before, started = bh.cpu_times(), time.monotonic()
    text = bh.run_wrk(url, env, args.duration, args)
    elapsed = time.monotonic() - started
    busy = bh.busy_shares(cores_before, bh.cpu_times())
    server_after, postgres_after = server.cpu_seconds(), postgres()
    if profiler is not None:
        bh.finish_profiler(*profiler)
    parsed = bh.parse_wrk(text)
    lua = parsed["lua"]
    requests = max(1, lua["requests"])
    result = {
        "server": server.label,
        "route": route,
        "rps": lua["requests"] / (lua["duration_us"] / 1e6),
        "p50_ms": lua["p50_us"] / 1e3,
        "p99_ms": lua["p99_us"] / 1e3,
        "errors": {name: n for name, n in lua["errors"].items() if n},
        "server_us": 1e6 * (server_after - server_before) / requests,
        "postgres_us": 1e6 * bh.postgres_cpu_seconds(postgres_before, postgres_after) / requests,
        "cores_busy": busy,
        "elapsed": elapsed,
    }
    errors = f"  ERRORS {result['errors']}" if result["errors"] else ""
    print(
        f"  {server.label:<22} {route:<12} {result['rps']:>9,.0f} req/s"
        f"  p50 {bh.fmt_ms(result['p50_ms'])}  p99 {bh.fmt_ms(result['p99_ms'])}"
        f"  server {result['server_us']:,.0f} µs/req  postgres {result['postgres_us']:,.0f}"
        f" µs/req  cores {busy}{errors}",
        flush=True,
    )
    return result


# -- servers ---------------------------------------------------------------------------------


def keyturn(backend: str, workdir: Path, args: Any, admin_token: str) -> bh.Server:
    """``keyturn serve`` on a fresh database, migrated and loaded with ``--rows`` rows."""
    data_dir = workdir / f"keyturn-{backend}"
    data_dir.mkdir()
    database = None
    if backend == "postgresql":
        database, url = bh.create_database(args, "keyturn_peers")
        args.databases.append(database)
        async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    else:
        async_url = f"sqlite+aiosqlite:///{data_dir / 'keyturn.db'}"
    asyncio.run(_prepare(async_url, args.rows))
    port, admin_port = bh.free_port(), bh.free_port()
    env = {
        "KEYTURN_DATA_DIR": str(data_dir),
        "KEYTURN_PUBLIC_HOST": "127.0.0.1",
        "KEYTURN_PUBLIC_PORT": str(port),
        "KEYTURN_ADMIN_HOST": "127.0.0.1",
        "KEYTURN_ADMIN_PORT": str(admin_port),
        "KEYTURN_ADMIN_TOKEN": admin_token,
        "KEYTURN_RATE_LIMIT_ENABLED": "false",
        "KEYTURN_LOG_LEVEL": "warning",
    }
    if database is not None:
        env["KEYTURN_DATABASE_URL"] = async_url
    env.update(item.split("=", 1) for item in args.keyturn_env)
    return bh.Server(
        f"Keyturn {backend}" + (f" {args.rows:,} rows" if args.rows else ""),
        ["taskset", "-c", args.server_cpu, str(args.keyturn), "serve"],
        env,
        workdir,
        base_url=f"http://127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        database=database,
        reaps=database is not None,
    )


async def _prepare(url: str, rows: int) -> None:
    await upgrade(url)
    if rows:
        engine = create_async_engine(url)
        try:
            await load_rows.load(engine, rows)
        finally:
            await engine.dispose()


def node_provider(workdir: Path, args: Any, client: tuple[str, str]) -> bh.Server:
    """node-oidc-provider installed from npm into ``workdir``, on one core."""
    folder = workdir / "node"
    folder.mkdir()
    shutil.copy(NODE_SCRIPT, folder / NODE_SCRIPT.name)
    (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
    npm = ["npm", "install", "--no-audit", "--no-fund", "--silent"]
    subprocess.run([*npm, f"oidc-provider@{args.oidc_provider}"], cwd=folder, check=True)  # noqa: S603
    version = json.loads((folder / "node_modules" / "oidc-provider" / "package.json").read_text())[
        "version"
    ]
    port = bh.free_port()
    command = ["taskset", "-c", args.server_cpu, "node", NODE_SCRIPT.name, str(port), *client]
    server = bh.Server(
        f"oidc-provider {version}",
        command,
        {"NODE_ENV": "production"},
        folder,
        base_url=f"http://127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{port}",
    )
    return server


def raw_floor(workdir: Path, args: Any) -> bh.Server:
    port = bh.free_port()
    command = ["taskset", "-c", args.server_cpu, sys.executable, str(RAW_ASGI), str(port)]
    url = f"http://127.0.0.1:{port}"
    return bh.Server("raw ASGI floor", command, {}, workdir, base_url=url, admin_url=url)


def _wait(server: bh.Server, path: str, method: str = "GET") -> None:
    """Until ``path`` answers (any status): the process is serving."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited:\n{server.log()}")
        try:
            bh.http(method, server.base_url + path)
        except OSError:
            time.sleep(0.1)
            continue
        return
    raise RuntimeError(f"{server.label} did not start:\n{server.log()}")


# -- runs ------------------------------------------------------------------------------------


def run_keyturn(backend: str, workdir: Path, args: Any) -> list[dict]:
    admin_token = secrets.token_urlsafe(32)
    server = keyturn(backend, workdir, args, admin_token)
    results = []
    try:
        server.wait_healthy("/healthz")
        bearer = {"Authorization": f"Bearer {admin_token}"}
        status, made = bh.http(
            "POST", server.admin_url + "/v1/admin/keys", {"name": "bench"}, bearer
        )
        if status != 201:
            raise RuntimeError(f"POST /v1/admin/keys answered {status}: {made}")
        client = _basic(made["record"]["id"], made["key"])
        token_env = _post_env("grant_type=client_credentials", client)
        status, issued = _request(server.base_url + "/v1/token", token_env)
        if status != 200:
            raise RuntimeError(f"/v1/token answered {status}: {issued!r}")
        creds = _legacy_credentials(server, bearer)
        authenticate = {"key": creds.key, "identifier": creds.identifier}
        runs = [
            ("token", "/v1/token", token_env),
            ("authenticate", "/authenticate", _json_env(json.dumps(authenticate))),
            (
                "introspect",
                "/v1/introspect",
                _post_env(urlencode({"token": issued["access_token"]}), f"Bearer {admin_token}"),
            ),
        ]
        for route, path, env in runs:
            if args.routes is None or route in args.routes:
                results.append(measure(server, route, path, env, args))
    finally:
        server.stop()
    return results


def _legacy_credentials(server: bh.Server, bearer: dict[str, str]) -> bh.Credentials:
    key, identifier = secrets.token_urlsafe(32), str(uuid.uuid4())
    status, body = bh.http(
        "POST", server.admin_url + "/register_key", {"key": key, "identifier": identifier}, bearer
    )
    if status != 201:
        raise RuntimeError(f"/register_key answered {status}: {body}")
    status, body = bh.http(
        "POST", server.base_url + "/authenticate", {"key": key, "identifier": identifier}
    )
    if status != 200:
        raise RuntimeError(f"/authenticate answered {status}: {body}")
    return bh.Credentials(key, identifier, body["jwt"], body["refresh_token"])


def run_node(workdir: Path, args: Any) -> list[dict]:
    client = ("bench", secrets.token_urlsafe(24))
    server = node_provider(workdir, args, client)
    results = []
    try:
        _wait(server, "/.well-known/openid-configuration")
        basic = _basic(*client)
        token_env = _post_env("grant_type=client_credentials&scope=read", basic)
        opaque_env = _post_env(
            "grant_type=client_credentials&scope=read&resource=urn%3Akeyturn%3Aopaque", basic
        )
        status, issued = _request(server.base_url + "/token", opaque_env)
        if status != 200:
            raise RuntimeError(f"oidc-provider /token answered {status}: {issued!r}")
        introspect_env = _post_env(urlencode({"token": issued["access_token"]}), basic)
        results.append(measure(server, "token", "/token", token_env, args))
        results.append(measure(server, "introspect", "/token/introspection", introspect_env, args))
    finally:
        server.stop()
    return results


def run_floor(workdir: Path, args: Any) -> list[dict]:
    server = raw_floor(workdir, args)
    try:
        _wait(server, "/")
        env = _post_env("grant_type=client_credentials", _basic("a", "b"))
        return [measure(server, "floor", "/", env, args)]
    finally:
        server.stop()


def run_grow(workdir: Path, args: Any) -> None:
    """Rounds of /authenticate (rows added) then /refresh (measured), one server's life."""
    admin_token = secrets.token_urlsafe(32)
    server = keyturn("postgresql", workdir, args, admin_token)
    rows: list[tuple[int, dict]] = []
    try:
        server.wait_healthy("/healthz")
        creds = _legacy_credentials(server, {"Authorization": f"Bearer {admin_token}"})
        authenticate = json.dumps({"key": creds.key, "identifier": creds.identifier})
        refresh = json.dumps({"refresh_token": creds.refresh_token, "identifier": creds.identifier})
        grow_args = argparse.Namespace(**{**vars(args), "duration": args.grow_seconds, "warmup": 0})
        for round_ in range(args.grow + 1):
            if round_:  # the first measurement runs on the near-empty table
                measure(server, "authenticate", "/authenticate", _json_env(authenticate), grow_args)
                if args.grow_rows:
                    asyncio.run(_load(server.database, args, tag=f"grow{round_}-"))
            count = asyncio.run(_count(server.database, args))
            print(f"  refresh_tokens: {count:,} rows")
            run = measure(server, "refresh", "/refresh", _json_env(refresh), args)
            rows.append((count, run))
    finally:
        server.stop()
    print(
        "\n| refresh_tokens rows | legacy /refresh req/s | p99 | PostgreSQL CPU µs/req"
        " | server CPU µs/req |"
    )
    print("|---:|---:|---:|---:|---:|")
    for count, run in rows:
        print(
            f"| {count:,} | {run['rps']:,.0f} | {bh.fmt_ms(run['p99_ms'])} |"
            f" {run['postgres_us']:,.0f} | {run['server_us']:,.0f} |"
        )


async def _load(database: str | None, args: Any, *, tag: str) -> None:
    url = urlsplit(args.postgres_url)._replace(path=f"/{database}").geturl()
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://", 1),
        connect_args={"server_settings": {"search_path": DEFAULT_SCHEMA}},
    )
    try:
        await load_rows.load(engine, args.grow_rows, tag=tag)
    finally:
        await engine.dispose()


async def _count(database: str | None, args: Any) -> int:
    import asyncpg

    parts = urlsplit(args.postgres_url)
    connection = await asyncpg.connect(
        parts._replace(path=f"/{database}").geturl(),
        server_settings={"search_path": DEFAULT_SCHEMA},
    )
    try:
        return int(await connection.fetchval("SELECT count(*) FROM refresh_tokens"))
    finally:
        await connection.close()


def report(results: list[dict]) -> None:
    by = {(run["server"], run["route"]): run for run in results}
    node = {route: run for (server, route), run in by.items() if server.startswith("oidc")}
    floor = by.get(("raw ASGI floor", "floor"))
    print(
        "\n| server | route | req/s | p50 | p99 | server µs/req | PostgreSQL µs/req"
        " | / node | / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in results:
        peer = node.get(run["route"]) or (
            node.get("token") if run["route"] == "authenticate" else None
        )
        versus_node = (
            f"{run['rps'] / peer['rps']:.2f}{bh.TIMES}"
            if peer and not run["server"].startswith("oidc")
            else ""
        )
        versus_floor = f"{run['rps'] / floor['rps']:.2f}{bh.TIMES}" if floor else ""
        print(
            f"| {run['server']} | {run['route']} | {run['rps']:,.0f} | {bh.fmt_ms(run['p50_ms'])}"
            f" | {bh.fmt_ms(run['p99_ms'])} | {run['server_us']:,.0f} | {run['postgres_us']:,.0f}"
            f" | {versus_node} | {versus_floor} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded run first (s)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout (s)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rows", type=int, default=0, help="keys + refresh tokens to preload")
    parser.add_argument("--oidc-provider", default="9", help="npm version of oidc-provider")
    parser.add_argument("--no-node", action="store_true", help="skip node-oidc-provider")
    parser.add_argument("--no-floor", action="store_true", help="skip the raw-ASGI floor")
    parser.add_argument(
        "--routes",
        type=lambda text: set(text.split(",")),
        default=None,
        help="Keyturn's routes to run, e.g. token,authenticate (default: all three)",
    )
    parser.add_argument("--grow", type=int, default=0, help="rounds of the growth run")
    parser.add_argument("--grow-seconds", type=float, default=10.0, help="/authenticate per round")
    parser.add_argument("--grow-rows", type=int, default=0, help="load_rows.py rows per round")
    parser.add_argument("--server-cpu", default="0", help="core the servers are pinned to")
    parser.add_argument("--load-cpu", default="1", help="core wrk is pinned to")
    parser.add_argument("--postgres-url", default=bh.ADMIN_DSN, help="admin DSN (creates DBs)")
    parser.add_argument("--keyturn", type=Path, default=Path(sys.executable).parent / "keyturn")
    parser.add_argument("--keyturn-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--py-spy", type=Path, help="sample each measured run with py-spy into this folder"
    )
    parser.add_argument("--py-spy-args", default="", help="extra py-spy record arguments")
    args = parser.parse_args()
    args.py_spy_bin = str(Path(sys.executable).parent / "py-spy")
    args.databases = []
    print(f"load average {os.getloadavg()}; {os.cpu_count()} CPUs", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="keyturn-peers-") as tmp:
        workdir = Path(tmp)
        try:
            if args.grow:
                run_grow(workdir, args)
                return
            if not args.no_floor:
                results += run_floor(workdir, args)
            if not args.no_node:
                results += run_node(workdir, args)
            backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
            for backend in backends:
                results += run_keyturn(backend, workdir, args)
        finally:
            for database in args.databases:
                bh.drop_database(args, database)
    report(results)
    print(f"load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
