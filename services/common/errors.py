"""One exception tree for all services, and the error envelope that carries it over HTTP.

```
BTPError (500 internal_error)
├── BadRequestError (400 bad_request)
│   ├── ValidationError (422 validation_error)
│   └── InvalidJSONError (400 invalid_json)
├── AuthenticationError (401 unauthorized)
├── NotFoundError (404 not_found)
├── ConflictError (409 conflict)
├── PayloadTooLargeError (413 payload_too_large)
├── OverloadedError (429 overloaded)
├── UpstreamError (502 upstream_error)
└── UnavailableError (503 unavailable)
```

Every non-2xx answer has the shape
``{"error": {"type": "...", "message": "...", "param": "..." | null}}``.
The status mapping lives here and only here: the server side renders ``error.to_envelope()`` with
``error.status_code``; the client side calls :func:`parse_error` to get the same class back.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx


class BTPError(Exception):
    """Base of every error a BTP service raises on purpose."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status_code is not None:
            self.status = status_code
        else:
            self.status = self.status_code

    def to_envelope(self) -> dict[str, Any]:
        """The JSON body sent for this error."""
        return {"error": {"type": self.error_type, "message": self.message, "param": self.param}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, param={self.param!r})"


class BadRequestError(BTPError):
    status_code = 400
    error_type = "bad_request"


class ValidationError(BadRequestError):
    status_code = 422
    error_type = "validation_error"


class InvalidJSONError(BadRequestError):
    status_code = 400
    error_type = "invalid_json"


class AuthenticationError(BTPError):
    status_code = 401
    error_type = "unauthorized"


class NotFoundError(BTPError):
    status_code = 404
    error_type = "not_found"


class ConflictError(BTPError):
    status_code = 409
    error_type = "conflict"


class PayloadTooLargeError(BTPError):
    status_code = 413
    error_type = "payload_too_large"


class OverloadedError(BTPError):
    status_code = 429
    error_type = "overloaded"


class UpstreamError(BTPError):
    status_code = 502
    error_type = "upstream_error"


class UnavailableError(BTPError):
    status_code = 503
    error_type = "unavailable"


ERROR_CLASSES: dict[str, type[BTPError]] = {
    cls.error_type: cls
    for cls in (
        BTPError,
        BadRequestError,
        ValidationError,
        InvalidJSONError,
        AuthenticationError,
        NotFoundError,
        ConflictError,
        PayloadTooLargeError,
        OverloadedError,
        UpstreamError,
        UnavailableError,
    )
}

_BY_STATUS: dict[int, type[BTPError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    405: BadRequestError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: OverloadedError,
    502: UpstreamError,
    503: UnavailableError,
}


def error_for_status(status: int) -> type[BTPError]:
    """The exception class a bare HTTP status maps to."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return BadRequestError if 400 <= status < 500 else BTPError


def parse_error(response: httpx.Response) -> BTPError:
    """Turn a non-2xx response (envelope or not) back into the exception class the server raised."""
    message = f"HTTP {response.status_code}"
    param: str | None = None
    cls = error_for_status(response.status_code)
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        message = str(err.get("message") or message)
        param = err.get("param")
        cls = ERROR_CLASSES.get(str(err.get("type")), cls)
    elif response.text:
        message = f"{message}: {response.text[:500]}"
    exc = cls(message, param=param, status_code=response.status_code)
    return exc
