# syntax=docker/dockerfile:1
# Keyturn's server image: `docker build -t keyturn .` (docs/deployment.md).
# Two stages: `builder` makes wheels from the pinned constraints; `runtime` installs
# them on a slim Python without compilers or pip caches and runs as an unprivileged user.
# tests/deploy/test_docker.py checks this file and runs its entrypoint and health check.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS builder
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# Keyturn with the PostgreSQL driver and Redis rate limits, every version pinned.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels \
        --constraint constraints.txt '.[postgres,redis]'

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 keyturn \
    && useradd --system --uid 10001 --gid keyturn --home-dir /var/lib/keyturn \
        --shell /usr/sbin/nologin keyturn \
    && install --directory --owner keyturn --group keyturn --mode 0700 /var/lib/keyturn
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels \
        'keyturn[postgres,redis]'

# The public listener on every interface; the admin listener stays on loopback unless
# KEYTURN_ADMIN_HOST=0.0.0.0 and KEYTURN_ADMIN_TOKEN are set (Keyturn refuses otherwise).
# No port is set here: the defaults are 8080 (public) and 8081 (admin), and a KEYTURN_*
# port would silently shadow JWThenticator's PORT, which keeps working.
# Generated secrets and the fallback SQLite database live in the data directory: mount
# a volume there, or set KEYTURN_KEK, KEYTURN_PEPPER and KEYTURN_DATABASE_URL.
ENV KEYTURN_PUBLIC_HOST=0.0.0.0 \
    KEYTURN_ADMIN_HOST=127.0.0.1 \
    KEYTURN_DATA_DIR=/var/lib/keyturn \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/keyturn
VOLUME ["/var/lib/keyturn"]
# The public listener only: the admin listener (8081) is bound to loopback inside the
# container; publish it only after setting KEYTURN_ADMIN_HOST and KEYTURN_ADMIN_TOKEN.
EXPOSE 8080

# `keyturn healthcheck` resolves the settings as `keyturn serve` does (KEYTURN_* or
# JWThenticator's PORT and URL_PREFIX) and asks GET <prefix>/healthz; exit 0 or 1.
# --start-interval (Docker Engine 25+) probes every 2 s while starting, so Compose's
# `service_healthy` dependants start seconds after Keyturn, not after 30 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --start-interval=2s --retries=3 \
    CMD ["keyturn", "healthcheck"]

ENTRYPOINT ["keyturn"]
CMD ["serve"]
