"""What every part of the service shares: `ServiceContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from keyturn.core.policy import ClaimsPolicy
from keyturn.core.revocation import RevocationList
from keyturn.observer import ServiceObserver
from keyturn.service.config import ServiceConfig
from keyturn.service.keycache import KeyCache, KeyUsage
from keyturn.storage.base import Storage

__all__ = ["ServiceContext"]


@dataclass(slots=True)
class ServiceContext:
    """The storage, configuration, clock and hooks the service's parts work with.

    One instance is shared by the parts `keyturn.service.KeyturnService` builds, so
    replacing ``storage`` (``service.storage = ...``) reaches all of them at once.
    """

    storage: Storage
    config: ServiceConfig
    policy: ClaimsPolicy
    clock: Callable[[], datetime]
    observer: ServiceObserver
    #: The in-memory revocation state the verifier consults.
    revocations: RevocationList
    #: API-key records found by hash, each kept for ``config.key_cache_ttl``.
    key_cache: KeyCache
    #: Keys' latest uses, written to ``last_used_at`` in batches.
    key_usage: KeyUsage
