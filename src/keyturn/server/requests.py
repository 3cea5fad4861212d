"""Reading request bodies safely: size cap, media type, JSON, and the pydantic model.

Everything that can go wrong with a body becomes a `RequestRejectedError` carrying the
right status (413, 415, 400), so no input reaches a handler unparsed or unchecked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope

from keyturn import rfc6750
from keyturn.errors import RequestRejectedError
from keyturn.server.http.bodies import check_declared_size, read_body
from keyturn.server.telemetry import REQUEST_ID_SCOPE_KEY, request_header

if TYPE_CHECKING:
    from keyturn.server.state import KeyturnState

__all__ = [
    "MAX_BODY_BYTES",
    "NO_NUL",
    "authorization",
    "bearer_token",
    "bearer_token_of",
    "check_json_media_type",
    "key_bucket",
    "keyturn_state",
    "parse_body",
    "parse_form",
    "read_form_or_json",
    "read_json",
    "read_model",
    "read_optional_json",
    "read_params",
    "refuse_nul",
    "request_id",
    "validation_messages",
]

MAX_BODY_BYTES: Final = 64 * 1024
#: Why text with U+0000 in it is refused (no route needs it; PostgreSQL cannot store it).
NO_NUL: Final = "text may not contain U+0000 (NUL)"
_JSON_TYPES: Final = ("application/json",)
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
Model = TypeVar("Model", bound=BaseModel)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _body(request: Request) -> bytes:
    check_declared_size(request_header(request.scope["headers"], b"content-length"), MAX_BODY_BYTES)
    return await read_body(request.receive, MAX_BODY_BYTES)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _parse_json(body: bytes) -> Any:
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        # A lone surrogate escape ("\ud800") parses but cannot be encoded later (T-IN-04).
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestRejectedError("the body is not valid UTF-8 JSON") from exc
    return data


def refuse_nul(data: Any) -> Any:
    """``data`` as given, unless some string in it holds U+0000.

    PostgreSQL cannot store NUL in text (it failed as a 500 where SQLite stored it), and no
    route needs one. JWThenticator's routes do without: their keys are hashed and their
    identifiers must be UUIDs.

    Raises:
        RequestRejectedError: 400, `NO_NUL`.
    """
    if _has_nul(data):
        raise RequestRejectedError(NO_NUL)
    return data


async def read_json(request: Request) -> Any:
    """Read a JSON body (``application/json`` or no declared type).

    Raises:
        RequestRejectedError: 413 too large, 415 another media type, 400 not JSON.
    """
    check_json_media_type(_media_type(request))
    return _parse_json(await _body(request))


def check_json_media_type(media_type: str) -> None:
    """Refuse a declared media type other than JSON (none at all is JSON).

    ``media_type`` is the ``Content-Type`` without its parameters, in lower case.

    Raises:
        RequestRejectedError: 415.
    """
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise RequestRejectedError(
            "send the body as application/json",
            status_code=415,
            error_code="unsupported_media_type",
        )


async def read_optional_json(request: Request) -> Any:
    """Like `read_json`, but an empty body reads as ``{}`` (optional request bodies)."""
    body = await _body(request)
    if not body:
        return {}
    media_type = _media_type(request)
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise RequestRejectedError(
            "send the body as application/json",
            status_code=415,
            error_code="unsupported_media_type",
        )
    return _parse_json(body)


async def read_form_or_json(request: Request) -> dict[str, str]:
    """Read an OAuth-style body: form-encoded (RFC 6749) or a flat JSON object of strings.

    `read_params` on the request's scope and ``receive``.

    Raises:
        RequestRejectedError: 413, 415, or 400 for a malformed or repeated parameter.
    """
    return await read_params(request.scope, request.receive)


async def read_params(scope: Scope, receive: Receive) -> dict[str, str]:
    """Read an OAuth-style body from ASGI: form-encoded (RFC 6749) or a flat JSON object.

    The media type is checked first (415 before any byte is read), then the declared and
    the actual size (413), then the parameters (`parse_form`, or JSON). The one reader of
    the Starlette handlers (`read_form_or_json`) and the raw-ASGI ``/v1/token``.

    Raises:
        RequestRejectedError: 413, 415, or 400 for a malformed or repeated parameter.
        ClientDisconnect: the client hung up mid-body.
    """
    headers = scope["headers"]
    content_type = request_header(headers, b"content-type") or b""
    media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type != _FORM_TYPE and media_type not in _JSON_TYPES:
        raise RequestRejectedError(
            f"send the body as {_FORM_TYPE} (or application/json)",
            status_code=415,
            error_code="unsupported_media_type",
        )
    check_declared_size(request_header(headers, b"content-length"), MAX_BODY_BYTES)
    body = await read_body(receive, MAX_BODY_BYTES)
    if media_type == _FORM_TYPE:
        return parse_form(body)
    data = _parse_json(body)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise RequestRejectedError("the JSON body must be an object of string values")
    refuse_nul(data)
    return data


def parse_form(body: bytes) -> dict[str, str]:
    """The parameters of an ``application/x-www-form-urlencoded`` body (RFC 6749 §3.1).

    UTF-8, blank values kept, at most 100 fields; an empty body has none.

    Raises:
        RequestRejectedError: 400, a malformed body, a NUL, or a repeated parameter.
    """
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=100,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejectedError("the form body is malformed") from exc
    params: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise RequestRejectedError(NO_NUL)
        if name in params:  # RFC 6749 §3.1: parameters must not be repeated
            raise RequestRejectedError(f"parameter {name!r} is repeated")
        params[name] = value
    return params


def validation_messages(exc: ValidationError) -> dict[str, list[str]]:
    """Field -> messages, the shape of JWThenticator's marshmallow errors; no input echoed."""
    messages: dict[str, list[str]] = {}
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "_schema"
        text = "Unknown field." if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] == "missing":
            text = "Missing data for required field."
        messages.setdefault(field, []).append(text)
    return messages


def read_model(model: type[Model], data: Any) -> Model:
    """Validate parsed JSON against a pydantic model.

    Raises:
        RequestRejectedError: 400 with per-field messages.
    """
    if not isinstance(data, Mapping):
        raise RequestRejectedError(
            "the body must be a JSON object", fields={"_schema": ["Invalid input type."]}
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestRejectedError(
            "the body has missing, unknown or invalid fields", fields=validation_messages(exc)
        ) from exc


def parse_body(model: type[Model], body: bytes) -> Model:
    """Parse and validate a JSON body already read, by the rules of `read_json` and `read_model`.

    Raises:
        RequestRejectedError: 400, as `read_json` and `read_model` would.
    """
    return read_model(model, _parse_json(body))


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None.

    Only the header counts: ``?access_token=`` is ignored (T-LOG-02). A malformed Bearer
    credential (empty, several parts) reads as none: the gateway routes answer it 401
    with a bare challenge (`keyturn.rfc6750`).
    """
    return bearer_token_of(request.headers.get("authorization"))


def authorization(scope: Scope) -> str | None:
    """The request's (first) ``Authorization`` header, as Starlette's ``request.headers``."""
    value = request_header(scope["headers"], b"authorization")
    return None if value is None else value.decode("latin-1")


def bearer_token_of(header: str | None) -> str | None:
    """The token of an ``Authorization`` header's value, by the rules of `bearer_token`."""
    return rfc6750.bearer_token(header, malformed="missing")


def keyturn_state(request: Request) -> KeyturnState:
    """The process's `KeyturnState`, which the app carries for its handlers."""
    state: KeyturnState = request.app.state.keyturn
    return state


def request_id(request: Request) -> str | None:
    """The request id `RequestTelemetry` chose (the sane ``X-Request-ID``, or a new one)."""
    value = request.scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else None


def key_bucket(key: str) -> str:
    """A rate-limit bucket for a key without storing or logging it: its id, or a hash."""
    if key.startswith("kt_") and len(key) > 19:
        return key[3:19]
    return "h" + hashlib.sha256(key.encode()).hexdigest()[:16]
