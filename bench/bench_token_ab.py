"""A/B of one route's server CPU per request: two Keyturn builds, runs interleaved (issue 19).

Usage: python bench/bench_token_ab.py A_SRC B_SRC [--rounds 6] [--duration 5]
                                      [--backend sqlite|postgresql|both]

``A_SRC`` and ``B_SRC`` are ``src`` folders of two Keyturn trees (e.g. ``git archive main
src | tar -x -C /tmp/a``); each build runs as ``keyturn serve`` from this virtualenv with
that folder first on ``PYTHONPATH``, both alive at once, pinned to the same core (wrk on
the other), on its own throwaway database. Each round measures ``POST /v1/token``
client_credentials (HTTP Basic, form body; ``bench_peers.py``'s request) once on A and
once on B, the order alternating, so a loaded machine's drift falls on both alike. The
figure is the server's utime+stime (``/proc/<pid>/stat``) over the requests wrk completed;
printed per run, then the median per build and the median of the per-round B/A ratios.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_http as bh  # type: ignore[import-not-found]  # beside this file
import bench_peers as bp  # type: ignore[import-not-found]


def _wrapper(folder: Path, src: Path, name: str) -> Path:
    """An executable that runs this virtualenv's ``keyturn`` with ``src`` imported first."""
    path = folder / f"keyturn-{name}"
    keyturn = Path(sys.executable).parent / "keyturn"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{src}" exec "{keyturn}" "$@"\n')
    path.chmod(0o755)
    return path


def _server(backend: str, workdir: Path, args: Any, name: str) -> tuple[bh.Server, dict]:
    folder = workdir / name
    folder.mkdir()
    args.keyturn = args.wrappers[name]
    token = secrets.token_urlsafe(32)
    server = bp.keyturn(backend, folder, args, token)
    server.label = f"{name} {backend}"
    server.wait_healthy("/healthz")
    bearer = {"Authorization": f"Bearer {token}"}
    status, made = bh.http("POST", server.admin_url + "/v1/admin/keys", {"name": "ab"}, bearer)
    if status != 201:
        raise RuntimeError(f"POST /v1/admin/keys answered {status}: {made}")
    client = bp._basic(made["record"]["id"], made["key"])
    return server, bp._post_env("grant_type=client_credentials", client)


def run(backend: str, workdir: Path, args: Any) -> None:
    servers = {name: _server(backend, workdir, args, name) for name in ("A", "B")}
    figures: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for round_ in range(args.rounds):
            order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
            for name in order:
                server, env = servers[name]
                result = bp.measure(server, "token", "/v1/token", env, args)
                figures[name].append(result["server_us"])
    finally:
        for server, _ in servers.values():
            server.stop()
    ratios = [b / a for a, b in zip(figures["A"], figures["B"], strict=True)]
    a, b = statistics.median(figures["A"]), statistics.median(figures["B"])
    print(
        f"{backend}: server µs/req median A {a:,.0f} (runs {_span(figures['A'])}), "
        f"B {b:,.0f} (runs {_span(figures['B'])}); B/A per round median "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})",
        flush=True,
    )


def _span(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("a_src", type=Path)
    parser.add_argument("b_src", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded run first (s)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout (s)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--server-cpu", default="0", help="core the servers are pinned to")
    parser.add_argument("--load-cpu", default="1", help="core wrk is pinned to")
    parser.add_argument("--postgres-url", default=bh.ADMIN_DSN, help="admin DSN (creates DBs)")
    parser.add_argument("--keyturn-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    args.rows, args.databases = 0, []
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="keyturn-ab-") as tmp:
        workdir = Path(tmp)
        args.wrappers = {
            "A": _wrapper(workdir, args.a_src.resolve(), "A"),
            "B": _wrapper(workdir, args.b_src.resolve(), "B"),
        }
        try:
            for backend in backends:
                folder = workdir / backend
                folder.mkdir()
                run(backend, folder, args)
        finally:
            for database in args.databases:
                bh.drop_database(args, database)


if __name__ == "__main__":
    main()
