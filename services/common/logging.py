"""Logging with a request id that travels across services (``X-Request-ID``)."""

from __future__ import annotations

import contextvars
import logging
import uuid

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("btp_request_id", default=None)


def get_request_id() -> str | None:
    """The request id of the request being served (or set by the caller), if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token[str | None]:
    """Set the current request id; returns a token for :func:`reset_request_id`."""
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    """Restore the request id that was current before :func:`set_request_id`."""
    _request_id.reset(token)


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = get_request_id() or "-"
        return True


def configure_logging(level: str = "INFO") -> None:
    """Idempotent root logging setup with the request id in every line."""
    root = logging.getLogger()
    if any(getattr(h, "_btp", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler()
    handler._btp = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
