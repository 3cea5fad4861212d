"""HTTP load benchmark: `keyturn serve` on SQLite and PostgreSQL, beside JWThenticator 1.6.3.

Usage: python bench/bench_http.py [--duration 10] [--connections 32]
                                  [--backend sqlite|postgresql|both] [--jwthenticator]

The server under test runs as a subprocess pinned to one core (``taskset -c 0``); the load
generator, wrk, runs as another process pinned to the other core (``taskset -c 1``), one
route at a time, for a bounded time each (a short warm-up run first, discarded). wrk is
driven by ``bench/wrk/request.lua``: a fixed JSON body for ``/authenticate``, ``/refresh``
and ``/validate``, an ``Authorization: Bearer <jwt>`` header for ``/validate_request`` and
``/v1/validate``, plain GETs for ``/jwks`` and the health route.

* Keyturn: ``keyturn serve`` from this virtualenv, with a temporary ``KEYTURN_DATA_DIR``,
  free loopback ports, ``KEYTURN_RATE_LIMIT_ENABLED=false`` (the limiter would otherwise
  throttle a benchmark that comes from one address) and ``KEYTURN_LOG_LEVEL=warning``. On
  PostgreSQL it gets a throwaway database (created and dropped here, migrated on start).
  One key is registered through the admin listener and traded once for a JWT and a
  refresh token, which every request then reuses.
* JWThenticator (``--jwthenticator``): ``python -m jwthenticator.server`` from a separate
  virtualenv (``bench/.jwthenticator-venv``, created on first use with
  ``pip install jwthenticator==1.6.3``) against its own throwaway database on the same
  PostgreSQL server, set up the same way through its ``/register_key`` and
  ``/authenticate``. Without ``--jwthenticator`` the ratios use the figures in
  ``REFERENCE_JWTHENTICATOR`` (measured once on this machine; marked "ref").

Prints req/s, p50 and p99 per route and server, the ratios against JWThenticator with
PASS/FAIL against the targets, ``/validate_request`` against the same server's
``/healthz``, and each server's peak RSS (``VmHWM``). Exits 1 when a target is missed.

The machine may be shared, so each run also records where the CPU went: the server
process, the PostgreSQL server (the backends of the benchmark's database, its helper
processes and the backends that exited), wrk, and "other" (everything else busy on the
machine). Before each route it waits (``--quiet-wait``) for the machine to go idle, and
a run in which other work took more than ``--max-other`` of a core is repeated
(``--retries``), keeping the least disturbed, within ``--budget`` seconds in all.

For investigation: ``--routes`` runs a subset, ``--py-spy DIR`` samples the server with
py-spy during each measured run and prints its top frames, ``--keyturn-env NAME=VALUE``
passes extra settings (e.g. ``KEYTURN_DATABASE_POOL_SIZE=32``), ``--keyturn PATH`` runs
another executable in place of ``keyturn`` (it gets the ``serve`` argument), and
``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk" / "request.lua"
JWTHENTICATOR_VERSION = "1.6.3"
DEFAULT_JWT_VENV = BENCH_DIR / ".jwthenticator-venv"
ADMIN_DSN = os.environ.get(
    "KEYTURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

#: JWThenticator 1.6.3 as measured once before Keyturn existed (req/s); the
#: baseline when this run does not measure it (--jwthenticator not given).
REFERENCE_JWTHENTICATOR = {
    "authenticate": 16.0,
    "refresh": 18.0,
    "validate": 2400.0,
    "validate_request": 2900.0,
    "jwks": 1100.0,
    "healthz": 15000.0,
}

#: Environment variables either server would pick up from the caller's shell.
_INHERITED_SETTINGS = re.compile(
    r"^(KEYTURN_.*|PORT|URL_PREFIX|DISABLE_EXTERNAL_API|DISABLE_INTERNAL_API|JWT_.*|"
    r"KEY_EXPIRY|REFRESH_TOKEN_EXPIRY|RSA_.*|DB_.*|ASYNC_URI)$"
)


@dataclass(frozen=True)
class Route:
    """One benchmarked route: its label, path on each server and how to call it."""

    name: str
    keyturn: str
    jwthenticator: str | None
    kind: str  # get | bearer | authenticate | refresh | validate


ROUTES = (
    Route("healthz", "/healthz", "/health", "get"),
    Route("validate_request", "/validate_request", "/validate_request", "bearer"),
    Route("v1/validate", "/v1/validate", None, "bearer"),
    Route("validate", "/validate", "/validate", "validate"),
    Route("jwks", "/jwks", "/jwks", "get"),
    Route("refresh", "/refresh", "/refresh", "refresh"),
    Route("authenticate", "/authenticate", "/authenticate", "authenticate"),
)


@dataclass(frozen=True)
class Target:
    """Keyturn's throughput on ``route`` must be ``factor`` times JWThenticator's best of
    ``baseline`` (its routes that do the same job)."""

    route: str
    baseline: tuple[str, ...]
    factor: float


TARGETS = (
    Target("authenticate", ("authenticate",), 100.0),
    Target("refresh", ("refresh",), 100.0),
    Target("validate", ("validate",), 5.0),
    Target("validate_request", ("validate_request",), 5.0),
    # JWThenticator has no /v1/validate; compare with the faster of its validate routes.
    Target("v1/validate", ("validate", "validate_request"), 5.0),
    Target("jwks", ("jwks",), 10.0),
)
TIMES = "\u00d7"  # the multiplication sign, for the ratio tables
HEALTH_FLOOR = 0.7  # /validate_request >= 0.7x the same server's /healthz


@dataclass
class Credentials:
    key: str
    identifier: str
    jwt: str
    refresh_token: str


@dataclass
class RunResult:
    """One measured wrk run."""

    route: str
    path: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    server_cpu: float  # share of one core the server process used during the run
    cpu_busy: list[float]  # share of each core busy during the run (whole machine)
    wrk_cpu: float = 0.0  # cores used by wrk
    postgres_cpu: float = 0.0  # cores used by every postgres process
    other_cpu: float = 0.0  # cores used by anything else: other work on a shared machine
    wrk_text_rps: float | None = None

    @property
    def failed_requests(self) -> int:
        return sum(self.errors.values())


@dataclass
class ServerResult:
    label: str
    runs: dict[str, RunResult] = field(default_factory=dict)
    rss_start_mib: float = 0.0
    peak_rss_mib: float = 0.0


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request with the standard library; returns (status, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 -- http://127.0.0.1 only
        url, data=data, method=method, headers=dict(headers or {})
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 -- loopback
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def proc_status(pid: int, field_name: str) -> float:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A backend's title: "postgres: 15/main: <user> <database> <host>(<port>) <state>".
_BACKEND = re.compile(rb"^postgres: [^:]+: \S+ (\S+) (?:\[local\]|\S+\(\d+\)) ")


def postgres_cpu_ticks(database: str | None, *, reaped: bool) -> dict[int, int]:
    """CPU time (clock ticks) by pid of the PostgreSQL processes that work for us: the
    postmaster and its helpers (WAL writer, checkpointer...) and the backends connected to
    ``database``; other databases' backends are someone else's work. ``reaped`` adds the
    postmaster's reaped children (backends that exited: JWThenticator opens a connection
    per statement, and a connection pool that overflows closes the extra connections),
    whichever database they served."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if "(postgres)" not in text:
                continue
            backend = _BACKEND.match((stat.parent / "cmdline").read_bytes())
            if backend is not None and backend.group(1).decode() != database:
                continue
            fields = text.rsplit(")", 1)[1].split()
            used = int(fields[11]) + int(fields[12])
            if reaped and backend is None:
                used += int(fields[13]) + int(fields[14])  # cutime + cstime
            ticks[int(stat.parent.name)] = used
    return ticks


def postgres_cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU used between two readings by the processes alive at the second."""
    ticks = sum(used - before.get(pid, 0) for pid, used in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_times() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if re.fullmatch(r"cpu\d+", name):
            numbers = [int(value) for value in values]
            idle = numbers[3] + numbers[4]  # idle + iowait
            times[name] = (sum(numbers) - idle, sum(numbers))
    return times


def busy_shares(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list:
    shares = []
    for name in sorted(after, key=lambda core: int(core[3:])):
        busy = after[name][0] - before[name][0]
        total = after[name][1] - before[name][1]
        shares.append(round(busy / total, 3) if total else 0.0)
    return shares


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's human output: Requests/sec, the --latency percentiles (ms), non-2xx count."""
    parsed: dict[str, Any] = {}
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE):
        parsed["rps"] = float(match.group(1))
    for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE):
        parsed[f"p{match.group(1)}_ms"] = float(match.group(2)) * _UNITS[match.group(3)]
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        parsed["non_2xx"] = int(match.group(1))
    if match := re.search(r"^BENCH_RESULT (\{.*\})$", text, re.MULTILINE):
        parsed["lua"] = json.loads(match.group(1))
    return parsed


def wrk_env(kind: str, creds: Credentials) -> dict[str, str]:
    if kind == "bearer":
        return {"BENCH_AUTHORIZATION": f"Bearer {creds.jwt}"}
    bodies = {
        "authenticate": {"key": creds.key, "identifier": creds.identifier},
        "refresh": {"refresh_token": creds.refresh_token, "identifier": creds.identifier},
        "validate": {"jwt": creds.jwt},
    }
    if kind in bodies:
        return {"BENCH_METHOD": "POST", "BENCH_BODY": json.dumps(bodies[kind])}
    return {"BENCH_METHOD": "GET"}


def run_wrk(url: str, env: dict[str, str], seconds: float, args: argparse.Namespace) -> str:
    command = [
        "taskset", "-c", args.load_cpu, "wrk",
        "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s",
        "--timeout", f"{args.timeout:g}s", "--latency", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    completed = subprocess.run(  # noqa: S603 -- fixed argv
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + args.timeout + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


@dataclass
class Budget:
    """Time for --budget: quiet waits and repeats only spend what the remaining runs
    (each ``per_run`` seconds) leave spare."""

    end: float
    remaining_runs: int
    per_run: float

    def spare(self) -> float:
        return self.end - time.monotonic() - self.remaining_runs * self.per_run


def wait_for_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait (at most ``limit`` s) until every core is idle but for ``threshold``; the
    benchmark's own server is idle between runs, so busy cores mean someone else's work.
    Returns the busiest core's share in the last second sampled."""
    deadline = time.monotonic() + limit
    while True:
        before = cpu_times()
        time.sleep(0.5)
        busiest = max(busy_shares(before, cpu_times()))
        if busiest <= threshold or time.monotonic() >= deadline:
            return busiest


def measure(
    server: Server, route: Route, path: str, creds: Credentials, args: argparse.Namespace
) -> RunResult:
    """Measure a route; when other work on the machine took more than ``--max-other`` of
    a core during the run, measure again (``--retries`` times) and keep the least
    disturbed run."""
    budget: Budget = args.budget_state
    runs = [measure_once(server, route, path, creds, args)]
    budget.remaining_runs -= 1
    while runs[-1].other_cpu > args.max_other and len(runs) <= args.retries:
        if budget.spare() < budget.per_run:
            print("    (no time left in --budget to repeat this disturbed run)")
            break
        print(f"    other work took {runs[-1].other_cpu:.2f} of a core: measuring again")
        runs.append(measure_once(server, route, path, creds, args))
    return min(runs, key=lambda run: run.other_cpu)


def measure_once(
    server: Server, route: Route, path: str, creds: Credentials, args: argparse.Namespace
) -> RunResult:
    url = server.base_url + path
    env = wrk_env(route.kind, creds)
    quiet_wait = min(args.quiet_wait, args.budget_state.spare())
    if quiet_wait > 0:
        busiest = wait_for_quiet(quiet_wait)
        if busiest > 0.15:
            print(f"  (machine still busy: a core at {busiest:.0%} before this run)")
    if args.warmup > 0:
        run_wrk(url, env, args.warmup, args)
    profiler = start_profiler(server, route, args) if args.py_spy else None
    postgres = functools.partial(postgres_cpu_ticks, server.database, reaped=server.reaps)
    server_before, postgres_before = server.cpu_seconds(), postgres()
    wrk_before, cores_before, started = children_cpu_seconds(), cpu_times(), time.monotonic()
    text = run_wrk(url, env, args.duration, args)
    elapsed = time.monotonic() - started
    server_cpu = (server.cpu_seconds() - server_before) / elapsed
    postgres_cpu = postgres_cpu_seconds(postgres_before, postgres()) / elapsed
    wrk_cpu = (children_cpu_seconds() - wrk_before) / elapsed
    cpu_busy = busy_shares(cores_before, cpu_times())
    if profiler is not None:
        finish_profiler(*profiler)
    parsed = parse_wrk(text)
    if "lua" not in parsed:
        raise RuntimeError(f"no BENCH_RESULT line in wrk's output:\n{text}")
    lua = parsed["lua"]
    rps = lua["requests"] / (lua["duration_us"] / 1e6)
    if parsed.get("rps") and abs(parsed["rps"] - rps) > 0.02 * rps:
        print(f"    (wrk printed {parsed['rps']:,.0f} req/s, its Lua summary {rps:,.0f})")
    result = RunResult(
        route=route.name,
        path=path,
        rps=rps,
        p50_ms=lua["p50_us"] / 1e3,
        p99_ms=lua["p99_us"] / 1e3,
        requests=lua["requests"],
        errors={name: count for name, count in lua["errors"].items() if count},
        server_cpu=round(server_cpu, 3),
        cpu_busy=cpu_busy,
        wrk_cpu=round(wrk_cpu, 3),
        postgres_cpu=round(postgres_cpu, 3),
        other_cpu=round(max(0.0, sum(cpu_busy) - server_cpu - wrk_cpu - postgres_cpu), 3),
        wrk_text_rps=parsed.get("rps"),
    )
    if args.verbose:
        print(text.rstrip())
    errors = f"  ERRORS {result.errors}" if result.errors else ""
    print(
        f"  {server.label:<20} {route.name:<17} {rps:>10,.0f} req/s  p50 {fmt_ms(result.p50_ms)}"
        f"  p99 {fmt_ms(result.p99_ms)}  CPU: server {result.server_cpu:.0%}"
        f" wrk {result.wrk_cpu:.0%} postgres {result.postgres_cpu:.0%}"
        f" other {result.other_cpu:.0%}{errors}",
        flush=True,
    )
    return result


# -- profiling (--py-spy DIR) ---------------------------------------------------------------


def start_profiler(
    server: Server, route: Route, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy, sampling the server (non-blocking) from the load core for the measured run."""
    args.py_spy.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"\W+", "-", f"{server.label}-{route.name}").lower()
    output = args.py_spy / f"{name}.txt"
    extra = args.py_spy_args.split()
    if "--native" not in extra:  # py-spy cannot unwind native frames without pausing
        extra.append("--nonblocking")
    command = [
        "taskset", "-c", args.load_cpu, args.py_spy_bin, "record", "--pid", str(server.pid),
        "--duration", str(max(1, int(args.duration))), "--rate", "200",
        "--format", "raw", "--output", str(output), *extra,
    ]  # fmt: skip
    log = output.with_suffix(".log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    log.close()
    return process, output


def finish_profiler(process: subprocess.Popen[bytes], output: Path) -> None:
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if output.exists():
        print(summarise_profile(output), flush=True)
    else:
        log = output.with_suffix(".log").read_text(errors="replace").strip()
        print(f"    py-spy wrote no profile: {log[-500:]}", flush=True)


def _frame(text: str) -> str:
    # "handler (keyturn/server/legacy.py:88)" -> "handler (keyturn/server/legacy.py)"
    return re.sub(r":\d+\)$", ")", text.strip())


def summarise_profile(path: Path, top: int = 12) -> str:
    """Top frames of a py-spy raw (collapsed) profile: self time and inclusive time."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";") if frame]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return f"    (no samples in {path})"
    lines = [f"    profile {path} ({total} samples); self time:"]
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"      {count / total:6.1%}  {frame}")
    lines.append("    inclusive time, project and library frames below the entry points:")
    interesting = re.compile(r"keyturn|sqlalchemy|asyncpg|aiosqlite|starlette|jwthenticator")
    entry = re.compile(r"keyturn/cli\.py|keyturn/server/runner\.py|^<module>|\.run \(")
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])
    chosen = [item for item in ranked if interesting.search(item[0]) and not entry.search(item[0])]
    for frame, count in chosen[:top]:
        lines.append(f"      {count / total:6.1%}  {frame}")
    return "\n".join(lines)


# -- servers ---------------------------------------------------------------------------------


class Server:
    """A server subprocess pinned to one core, stopped with SIGTERM."""

    def __init__(
        self,
        label: str,
        command: list[str],
        env: dict[str, str],
        workdir: Path,
        *,
        base_url: str,
        admin_url: str,
        database: str | None = None,
        reaps: bool = False,
    ):
        self.label = label
        self.database = database  # PostgreSQL database name, for the CPU accounting
        self.reaps = reaps  # count exited PostgreSQL backends as ours (connection churn)
        self.base_url = base_url
        self.admin_url = admin_url
        self.log_path = workdir / (re.sub(r"\W+", "-", label) + ".log")
        clean = {k: v for k, v in os.environ.items() if not _INHERITED_SETTINGS.match(k)}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 -- fixed argv
            command, env={**clean, **env}, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def wait_healthy(self, path: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited ({self.process.returncode}):\n{self.log()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http("GET", self.base_url + path)
                if status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not answer {path} within {timeout:.0f} s")

    def log(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def keyturn_server(backend: str, database_url: str | None, workdir: Path, args) -> Server:
    port, admin_port = free_port(), free_port()
    data_dir = workdir / f"keyturn-{backend}"
    data_dir.mkdir()
    env = {
        "KEYTURN_DATA_DIR": str(data_dir),
        "KEYTURN_PUBLIC_HOST": "127.0.0.1",
        "KEYTURN_PUBLIC_PORT": str(port),
        "KEYTURN_ADMIN_HOST": "127.0.0.1",
        "KEYTURN_ADMIN_PORT": str(admin_port),
        "KEYTURN_RATE_LIMIT_ENABLED": "false",
        "KEYTURN_LOG_LEVEL": "warning",
    }
    env.update(item.split("=", 1) for item in args.keyturn_env)
    if database_url is not None:
        env["KEYTURN_DATABASE_URL"] = database_url
        env["KEYTURN_MIGRATE_ON_START"] = "true"
    command = ["taskset", "-c", args.server_cpu, str(args.keyturn), "serve"]
    return Server(
        f"Keyturn {backend}",
        command,
        env,
        workdir,
        base_url=f"http://127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        database=None if database_url is None else urlsplit(database_url).path.lstrip("/"),
        reaps=database_url is not None,  # a pool that overflows opens and closes connections
    )


def jwthenticator_server(database: str, workdir: Path, args) -> Server:
    parts = urlsplit(args.postgres_url)
    port = free_port()
    env = {
        "PORT": str(port),
        "DB_USER": parts.username or "postgres",
        "DB_PASS": parts.password or "",
        "DB_HOST": f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}",
        "DB_NAME": database,
    }
    command = ["taskset", "-c", args.server_cpu, str(args.jwthenticator_python)]
    command += ["-m", "jwthenticator.server"]
    url = f"http://127.0.0.1:{port}"
    return Server(
        "JWThenticator PG",
        command,
        env,
        workdir,
        base_url=url,
        admin_url=url,
        database=database,
        reaps=True,
    )


def enroll(server: Server) -> Credentials:
    """Register a fresh key (uuid identifier), trade it once for a JWT + refresh token."""
    key, identifier = secrets.token_urlsafe(32), str(uuid.uuid4())
    status, body = http(
        "POST", server.admin_url + "/register_key", {"key": key, "identifier": identifier}
    )
    if status != 201:
        raise RuntimeError(f"{server.label}: /register_key answered {status}: {body}")
    status, body = http(
        "POST", server.base_url + "/authenticate", {"key": key, "identifier": identifier}
    )
    if status != 200:
        raise RuntimeError(f"{server.label}: /authenticate answered {status}: {body}")
    return Credentials(key, identifier, body["jwt"], body["refresh_token"])


def smoke(server: Server, route: Route, path: str, creds: Credentials) -> None:
    """Each route must answer 200 once before it is loaded (no benchmarking of 401s)."""
    env = wrk_env(route.kind, creds)
    headers = {}
    if "BENCH_AUTHORIZATION" in env:
        headers["Authorization"] = env["BENCH_AUTHORIZATION"]
    body = json.loads(env["BENCH_BODY"]) if "BENCH_BODY" in env else None
    status, answer = http(env.get("BENCH_METHOD", "GET"), server.base_url + path, body, headers)
    if status != 200:
        raise RuntimeError(f"{server.label}: {path} answered {status}: {answer}")


def bench_server(
    server: Server, health: str, args: argparse.Namespace, label_routes: tuple[Route, ...]
) -> ServerResult:
    result = ServerResult(server.label)
    try:
        server.wait_healthy(health)
        result.rss_start_mib = proc_status(server.pid, "VmRSS")
        creds = enroll(server)
        for route in label_routes:
            path = route.jwthenticator if server.label.startswith("JWT") else route.keyturn
            if path is None:
                continue
            smoke(server, route, path, creds)
            result.runs[route.name] = measure(server, route, path, creds, args)
        result.peak_rss_mib = proc_status(server.pid, "VmHWM")
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} died during the run:\n{server.log()}")
    finally:
        server.stop()
    return result


# -- PostgreSQL ------------------------------------------------------------------------------


async def _admin(statement: str, dsn: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database(args: argparse.Namespace, prefix: str) -> tuple[str, str]:
    """A throwaway database; returns (name, URL)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"', args.postgres_url))
    parts = urlsplit(args.postgres_url)
    return name, parts._replace(path=f"/{name}").geturl()


def drop_database(args: argparse.Namespace, name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', args.postgres_url))


async def _postgres_version(dsn: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


# -- JWThenticator's virtualenv --------------------------------------------------------------


def ensure_jwthenticator(python: Path) -> None:
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('jwthenticator'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False)  # noqa: S603
        if found.stdout.strip() == JWTHENTICATOR_VERSION:
            return
        raise SystemExit(
            f"{python} does not have jwthenticator=={JWTHENTICATOR_VERSION} "
            f"({found.stdout.strip() or found.stderr.strip()})"
        )
    if python != DEFAULT_JWT_VENV / "bin" / "python":
        raise SystemExit(f"{python} does not exist")
    print(f"creating {DEFAULT_JWT_VENV} with jwthenticator=={JWTHENTICATOR_VERSION} ...")
    subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_JWT_VENV)], check=True)  # noqa: S603
    pip = [str(python), "-m", "pip", "install", "-q", f"jwthenticator=={JWTHENTICATOR_VERSION}"]
    subprocess.run(pip, check=True)  # noqa: S603


# -- report ----------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms"


def baseline(jwt: ServerResult | None, target: Target) -> tuple[float, str]:
    """JWThenticator's best req/s over the target's baseline routes, and where it came from."""
    if jwt is not None:
        values = [jwt.runs[name].rps for name in target.baseline if name in jwt.runs]
        if values:
            return max(values), "measured"
    return max(REFERENCE_JWTHENTICATOR[name] for name in target.baseline), "ref"


def report(results: list[ServerResult], jwt: ServerResult | None) -> bool:
    """Print the tables (Markdown); return True when every target is met."""
    keyturn = [server for server in results if server is not jwt]
    report_throughput(results, jwt)
    ok = report_targets(keyturn, jwt)
    ok &= report_health(keyturn)
    report_resources(results)
    return ok


def report_throughput(results: list[ServerResult], jwt: ServerResult | None) -> None:
    print("\n### Throughput and latency\n")
    header = "| route |" + "".join(f" {r.label} req/s | p50 | p99 |" for r in results)
    print(header)
    print("|---|" + "---:|---:|---:|" * len(results))
    for route in ROUTES:
        cells = []
        for server in results:
            run = server.runs.get(route.name)
            if run is None:
                cells.append(" - | - | - |")
                continue
            flag = " (!)" if run.failed_requests else ""
            cells.append(f" {run.rps:,.0f}{flag} | {fmt_ms(run.p50_ms)} | {fmt_ms(run.p99_ms)} |")
        label = (
            route.name
            if jwt is None or route.jwthenticator in (None, route.keyturn)
            else (f"{route.name} (JWThenticator {route.jwthenticator})")
        )
        print(f"| `{label}` |" + "".join(cells))


def report_targets(keyturn: list[ServerResult], jwt: ServerResult | None) -> bool:
    ok = True
    print("\n### Against JWThenticator 1.6.3\n")
    print("| route | target |" + "".join(f" {s.label} | |" for s in keyturn) + " baseline |")
    print("|---|---:|" + "---:|---|" * len(keyturn) + "---:|")
    for target in TARGETS:
        base, source = baseline(jwt, target)
        cells = []
        for server in keyturn:
            run = server.runs.get(target.route)
            if run is None:
                cells.append(" - | |")
                continue
            if base <= 0:
                ok = False
                cells.append(" n/a | RERUN (baseline completed no request) |")
                continue
            ratio = run.rps / base
            passed = ratio >= target.factor and not run.failed_requests
            ok &= passed
            cells.append(f" {ratio:,.1f}{TIMES} | {'PASS' if passed else 'FAIL'} |")
        names = " / ".join(f"/{name}" for name in target.baseline)
        print(
            f"| `/{target.route}` | >= {target.factor:g}{TIMES} |"
            + "".join(cells)
            + f" {base:,.0f} req/s ({names}, {source}) |"
        )
    return ok


def report_health(keyturn: list[ServerResult]) -> bool:
    ok = True
    print(f"\n### `/validate_request` against the same server's `/healthz` (≥ {HEALTH_FLOOR})\n")
    print("| server | /validate_request | /healthz | ratio | |")
    print("|---|---:|---:|---:|---|")
    for server in keyturn:
        validate, health = server.runs.get("validate_request"), server.runs.get("healthz")
        if validate is None or health is None:
            continue
        ratio = validate.rps / health.rps
        passed = ratio >= HEALTH_FLOOR
        ok &= passed
        print(
            f"| {server.label} | {validate.rps:,.0f} | {health.rps:,.0f} | {ratio:.2f} |"
            f" {'PASS' if passed else 'FAIL'} |"
        )
    return ok


def report_resources(results: list[ServerResult]) -> None:
    print("\n### Peak memory\n")
    print("| server | RSS after start | peak RSS (VmHWM) |")
    print("|---|---:|---:|")
    for server in results:
        print(
            f"| {server.label} | {server.rss_start_mib:.0f} MiB | {server.peak_rss_mib:.0f} MiB |"
        )
    print("\n### CPU during each run (cores: server / postgres / other processes)\n")
    print("| route |" + "".join(f" {server.label} |" for server in results))
    print("|---|" + "---|" * len(results))
    for route in ROUTES:
        cells = []
        for server in results:
            run = server.runs.get(route.name)
            cells.append(
                " - |"
                if run is None
                else f" {run.server_cpu:.2f} / {run.postgres_cpu:.2f} / {run.other_cpu:.2f} |"
            )
        print(f"| `{route.name}` |" + "".join(cells))
    failed = [
        f"{server.label} {run.route}: {run.errors}"
        for server in results
        for run in server.runs.values()
        if run.failed_requests
    ]
    if failed:
        print("\n(!) runs with failed requests (non-2xx, timeouts, socket errors):")
        for line in failed:
            print(f"  {line}")


def versions(args: argparse.Namespace) -> dict[str, str]:
    found = {"python": platform.python_version(), "kernel": platform.release()}
    for name in ("keyturn", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    for name in ("aiosqlite", "asyncpg", "cryptography", "pyjwt"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    found["wrk"] = (wrk.stdout + wrk.stderr).split("\n", 1)[0].strip()
    with contextlib.suppress(Exception):
        found["postgresql"] = asyncio.run(_postgres_version(args.postgres_url))
    with contextlib.suppress(OSError):
        models = re.findall(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        found["cpu"] = f"{len(models)} x {models[0]}" if models else str(os.cpu_count())
    return found


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded run first (s)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout (s)")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both", "none"), default="both"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each route, wait up to this many seconds for other work on the "
        "machine to stop (the machine is shared); 0 disables",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.2,
        help="share of a core other processes may take during a run before it is repeated",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    parser.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds the whole benchmark may take; quiet waits and repeats stop when "
        "only the remaining runs fit",
    )
    parser.add_argument("--jwthenticator", action="store_true", help="also run JWThenticator")
    parser.add_argument(
        "--routes", default=None, help="comma-separated subset, e.g. authenticate,refresh"
    )
    parser.add_argument("--server-cpu", default="0", help="core the servers are pinned to")
    parser.add_argument("--load-cpu", default="1", help="core wrk is pinned to")
    parser.add_argument("--postgres-url", default=ADMIN_DSN, help="admin DSN (creates DBs)")
    parser.add_argument("--keyturn", type=Path, default=Path(sys.executable).parent / "keyturn")
    parser.add_argument(
        "--keyturn-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for keyturn serve (repeatable), for experiments",
    )
    parser.add_argument(
        "--jwthenticator-python", type=Path, default=DEFAULT_JWT_VENV / "bin" / "python"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample each measured run with py-spy (from the load core) into DIR and print "
        "the top frames; perturbs the figures",
    )
    parser.add_argument(
        "--py-spy-args", default="", help="extra py-spy record arguments, e.g. '--native'"
    )
    parser.add_argument(
        "--py-spy-bin", default=str(Path(sys.executable).parent / "py-spy"), help=argparse.SUPPRESS
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output")
    return parser.parse_args(argv)


def preflight(args: argparse.Namespace) -> tuple[Route, ...]:
    """Check the tools are there; return the routes to run."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), "
            "`brew install wrk` (macOS), or build https://github.com/wg/wrk"
        )
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing: `apt-get install -y util-linux`")
    if args.server_cpu == args.load_cpu:
        print("warning: server and wrk share a core; figures are not comparable", flush=True)
    if not args.keyturn.exists():
        raise SystemExit(f"{args.keyturn} not found: run with the project's virtualenv python")
    if args.jwthenticator:
        ensure_jwthenticator(args.jwthenticator_python)
    if not args.routes:
        return ROUTES
    wanted = set(args.routes.split(","))
    unknown = wanted - {route.name for route in ROUTES}
    if unknown:
        raise SystemExit(f"unknown routes {sorted(unknown)}; known: {[r.name for r in ROUTES]}")
    return tuple(route for route in ROUTES if route.name in wanted)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    routes = preflight(args)
    found = versions(args)
    print("versions:", ", ".join(f"{name} {value}" for name, value in found.items()))
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s (warm-up "
        f"{args.warmup:g}s) pinned to cpu {args.load_cpu}; servers pinned to cpu "
        f"{args.server_cpu}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    backends = {"both": ["sqlite", "postgresql"], "none": []}.get(args.backend, [args.backend])
    runs = len(routes) * len(backends)
    if args.jwthenticator:
        runs += sum(1 for route in routes if route.jwthenticator is not None)
    servers = len(backends) + int(args.jwthenticator)
    per_run = args.duration + args.warmup + 1
    args.budget_state = Budget(time.monotonic() + args.budget - 20 * servers, runs, per_run)
    results: list[ServerResult] = []
    jwt: ServerResult | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            database = url = None
            if backend == "postgresql":
                database, url = create_database(args, "keyturn_http_bench")
            try:
                server = keyturn_server(backend, url, workdir, args)
                results.append(bench_server(server, "/healthz", args, routes))
            finally:
                if database is not None:
                    drop_database(args, database)
        if args.jwthenticator:
            database, _ = create_database(args, "jwthenticator_http_bench")
            try:
                server = jwthenticator_server(database, workdir, args)
                jwt = bench_server(server, "/health", args, routes)
                results.append(jwt)
            finally:
                drop_database(args, database)
    print(f"\n{time.monotonic() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f}")
    ok = report(results, jwt)
    if args.json:
        document = {
            "versions": found,
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "servers": [
                {**asdict(server), "runs": {k: asdict(v) for k, v in server.runs.items()}}
                for server in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
