"""Login benchmark: logins per second, validation during a login flood, failure timing.

Usage: python bench/bench_login.py [--duration 5] [--flood-connections 16]
                                   [--validate-connections 8] [--samples 200]
                                   [--concurrency N] [--json FILE]

Starts ``keyturn serve`` (SQLite in a temporary ``KEYTURN_DATA_DIR``, free loopback ports,
``KEYTURN_LOGIN_RATE_LIMIT_*`` raised so the throttle does not refuse a benchmark that
comes from one address, ``KEYTURN_LOG_LEVEL=warning``), creates one user through the
admin listener and logs in once for an access token. Then, with wrk:

1. **validate alone**: ``GET /v1/validate`` with that token, for ``--duration`` seconds;
2. **logins alone**: ``POST /login`` with the right password (form-encoded), the same time;
3. **validate during a login flood**: both at once, from two wrk processes; the ratio of
   (3) to (1) is how much a login flood takes from token validation on the same server.

Finally **failure timing**: ``--samples`` sequential ``POST /login`` each for an unknown
email and for a known email with a wrong password, interleaved, with their medians, means
and Welch's t (ASVS 6.3.8 asks that response times not tell the two apart; |t| < 4.5 is
the dudect-style threshold used in ``docs/threats.md``, T-BF-03).

The argon2 parameters are the production ones (argon2id, m=19 MiB, t=2, p=1), and
``--concurrency`` sets ``KEYTURN_PASSWORD_HASH_CONCURRENCY`` (default: the server's own,
half the CPUs). Speed claims are recorded in ``bench/README.md``; the machine may be
shared, so the load average before and after is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

EMAIL = "bench@example.com"
PASSWORD = "a benchmark passphrase that is long"  # noqa: S105 -- a throwaway account
WRONG = "not the benchmark passphrase at all"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not become ready")


def start_server(
    workdir: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str, str]:
    public, admin = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")},
        "KEYTURN_DATA_DIR": str(workdir / "data"),
        "KEYTURN_PUBLIC_HOST": "127.0.0.1",
        "KEYTURN_PUBLIC_PORT": str(public),
        "KEYTURN_ADMIN_PORT": str(admin),
        "KEYTURN_LOG_LEVEL": "warning",
        "KEYTURN_LOGIN_RATE_LIMIT_PER_ADDRESS": "100000000",
        "KEYTURN_LOGIN_RATE_LIMIT_PER_ACCOUNT_ADDRESS": "100000000",
        "KEYTURN_LOGIN_RATE_LIMIT_PER_ACCOUNT": "100000000",
        "KEYTURN_RATE_LIMIT_PER_ADDRESS": "100000000",
    }
    if args.concurrency:
        env["KEYTURN_PASSWORD_HASH_CONCURRENCY"] = str(args.concurrency)
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "keyturn", "serve"], env=env, stdout=log, stderr=log
    )
    public_url, admin_url = f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}"
    try:
        wait_ready(public_url, time.monotonic() + 60)
        wait_ready(admin_url, time.monotonic() + 10)
    except BaseException:
        process.kill()
        raise
    return process, public_url, admin_url


def lua(path: Path, method: str, body: str | None, headers: dict[str, str]) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    lines += [f'wrk.headers["{name}"] = {json.dumps(value)}' for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_wrk(url: str, script: Path, connections: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 -- fixed wrk arguments
        [  # noqa: S607
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse_wrk(text: str) -> dict[str, Any]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    latency = {}
    for percentile in ("50", "99"):
        match = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", text)
        if match:
            factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
            latency[f"p{percentile}_ms"] = round(float(match.group(1)) * factor, 2)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{text}")
    return {
        "rps": float(rate.group(1)),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        **latency,
    }


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    process = start_wrk(url, script, connections, seconds)
    output, _ = process.communicate()
    return parse_wrk(output)


def welch_t(a: list[float], b: list[float]) -> float:
    va, vb = statistics.variance(a), statistics.variance(b)
    return (statistics.fmean(a) - statistics.fmean(b)) / ((va / len(a) + vb / len(b)) ** 0.5)


def failure_timing(public_url: str, samples: int) -> dict[str, Any]:
    unknown: list[float] = []
    wrong: list[float] = []
    with httpx.Client(base_url=public_url, timeout=10) as client:
        for _ in range(10):  # warm-up: connections, caches, the dummy hash
            client.post("/login", data={"email": "nobody@example.com", "password": WRONG})
            client.post("/login", data={"email": EMAIL, "password": WRONG})
        bodies = set()
        for n in range(samples):
            pair = [("unknown", "nobody@example.com"), ("wrong", EMAIL)]
            for kind, email in pair if n % 2 == 0 else reversed(pair):
                start = time.perf_counter()
                response = client.post("/login", data={"email": email, "password": WRONG})
                elapsed = (time.perf_counter() - start) * 1000
                bodies.add(response.content)
                (unknown if kind == "unknown" else wrong).append(elapsed)
    return {
        "samples": samples,
        "unknown_median_ms": round(statistics.median(unknown), 2),
        "wrong_median_ms": round(statistics.median(wrong), 2),
        "unknown_mean_ms": round(statistics.fmean(unknown), 2),
        "wrong_mean_ms": round(statistics.fmean(wrong), 2),
        "welch_t": round(welch_t(unknown, wrong), 2),
        "distinct_bodies": len(bodies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--flood-connections", type=int, default=16)
    parser.add_argument("--validate-connections", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200, help="per failure kind")
    parser.add_argument("--concurrency", type=int, default=0, help="argon2 threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-login-") as tmp:
        workdir = Path(tmp)
        process, public_url, admin_url = start_server(workdir, args)
        try:
            created = httpx.post(
                f"{admin_url}/v1/admin/users", json={"email": EMAIL, "password": PASSWORD}
            )
            created.raise_for_status()
            token = httpx.post(
                f"{public_url}/login", data={"email": EMAIL, "password": PASSWORD}
            ).json()["token"]
            validate = lua(
                workdir / "validate.lua", "GET", None, {"Authorization": f"Bearer {token}"}
            )
            form = httpx.QueryParams({"email": EMAIL, "password": PASSWORD})
            login = lua(
                workdir / "login.lua",
                "POST",
                str(form),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            validate_url, login_url = f"{public_url}/v1/validate", f"{public_url}/login"

            run_wrk(validate_url, validate, args.validate_connections, 1)  # warm-up
            results["validate_alone"] = run_wrk(
                validate_url, validate, args.validate_connections, args.duration
            )
            results["login_alone"] = run_wrk(
                login_url, login, args.flood_connections, args.duration
            )
            flood = start_wrk(login_url, login, args.flood_connections, args.duration + 1)
            time.sleep(0.5)  # let the flood fill the argon2 queue first
            results["validate_during_flood"] = run_wrk(
                validate_url, validate, args.validate_connections, args.duration
            )
            results["login_during_flood"] = parse_wrk(flood.communicate()[0])
            results["failure_timing"] = failure_timing(public_url, args.samples)
        finally:
            process.terminate()
            process.wait(timeout=10)
    results["load_after"] = os.getloadavg()
    alone, during = results["validate_alone"]["rps"], results["validate_during_flood"]["rps"]
    results["validate_kept"] = round(during / alone, 3) if alone else None

    timing = results["failure_timing"]
    loads = f"load before {results['load_before']}, after {results['load_after']}"
    print(f"cpus {results['cpus']}, {loads}")
    print(f"{'run':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
    for name in ("validate_alone", "login_alone", "validate_during_flood", "login_during_flood"):
        row = results[name]
        print(
            f"{name:<28}{row['rps']:>10.1f}{row.get('p50_ms', 0):>10}"
            f"{row.get('p99_ms', 0):>10}{row['errors']:>9}"
        )
    print(f"validate during a login flood keeps {results['validate_kept']:.1%} of its rate")
    print(
        f"failure timing ({timing['samples']} each): unknown email median "
        f"{timing['unknown_median_ms']} ms, wrong password {timing['wrong_median_ms']} ms, "
        f"Welch t {timing['welch_t']}, distinct bodies {timing['distinct_bodies']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
