"""Settings for the server process: workers, trusted proxies and logging."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["ProcessSettings"]


class ProcessSettings(BaseModel):
    """How many processes serve, which proxies they trust, and how they log."""

    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For the public listener trusts "
        "(comma-separated; the admin listener never trusts it).",
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log lines as JSON objects or console text; auto: console on a "
        "terminal, json otherwise.",
    )
