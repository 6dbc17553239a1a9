"""One error tree for FerrousForge. Every class carries the HTTP status it maps to.

    ForgeError                      500
    ├── ModelError                  400
    │   ├── ModelNotFound           404
    │   ├── ModelNotLoaded          409
    │   ├── UnsupportedFormat       415
    │   ├── InvalidModelFile        422  (corrupt, truncated, wrong magic)
    │   └── InsufficientMemory      507  (.required, .available in bytes)
    ├── InferenceError              500
    │   ├── ContextOverflow         400  (.tokens, .limit)
    │   ├── InvalidTemplate         400
    │   ├── InvalidFormat           400  (a schema or grammar the runtime refuses)
    │   ├── UnsupportedTask         400
    │   └── Interrupted             503  (a load cancelled under a waiting request)
    ├── StorageError                500
    │   ├── InvalidModelName        400
    │   ├── DownloadFailed          502
    │   └── DiskFull                507  (no room for a pull)
    ├── ConfigError                 400
    │   ├── DeviceUnavailable       400
    │   └── MissingExtra            501  (names the pip extra to install)
    ├── QueueFull                   503
    ├── EngineUnreachable           503  (a remote engine did not answer)
    └── RequestError                400  (the HTTP boundary)
        ├── LimitExceeded           400  (.setting names the limit)
        ├── InvalidTensor           400  (an infer input of the wrong name, datatype or shape)
        ├── UsageError              400  (a %forge magic's arguments)
        ├── Unauthorized            401
        ├── Forbidden               403  (cross-site, rebinding, a path or host not allowed)
        ├── NotFound                404  (a path the server does not have)
        ├── NameTaken               400  (a pull would replace another model)
        ├── Conflict                409
        ├── PayloadTooLarge         413
        ├── RateLimited             429  (.retry_after in seconds)
        └── RequestTimeout          504

Errors from outside libraries are translated at the boundary with ``raise ... from``.
``str(err)`` is always one readable line. Over HTTP an error travels as its message, its
class name and its fields (``wire``), and ``rebuild`` makes the same class with the same
fields again on the client side.
"""

from __future__ import annotations

import sys
from typing import Any


class ForgeError(Exception):
    """Base of every FerrousForge error."""

    status: int = 500


class ModelError(ForgeError):
    status = 400


class ModelNotFound(ModelError):
    status = 404

    def __init__(self, name: str, hint: str = "") -> None:
        self.name, self.hint = name, hint
        msg = f"model {name!r} not found"
        super().__init__(f"{msg}; {hint}" if hint else msg)


class ModelNotLoaded(ModelError):
    status = 409


class UnsupportedFormat(ModelError):
    status = 415


class InvalidModelFile(ModelError):
    status = 422


class InsufficientMemory(ModelError):
    status = 507

    def __init__(self, name: str, required: int, available: int) -> None:
        self.name, self.required, self.available = name, required, available
        super().__init__(
            f"not enough memory to load {name!r}: requires {_mib(required)}, "
            f"{_mib(available)} available"
        )


class InferenceError(ForgeError):
    status = 500


class ContextOverflow(InferenceError):
    status = 400

    def __init__(self, tokens: int, limit: int) -> None:
        self.tokens, self.limit = tokens, limit
        super().__init__(
            f"input is {tokens} tokens, longer than the context of {limit} tokens; "
            "raise num_ctx or shorten the input"
        )


class InvalidTemplate(InferenceError):
    status = 400


class InvalidFormat(InferenceError):
    status = 400


class UnsupportedTask(InferenceError):
    status = 400


class Interrupted(InferenceError):
    """Work this request waited on was cancelled (a shared load, the engine closing)."""

    status = 503


class StorageError(ForgeError):
    status = 500


class InvalidModelName(StorageError):
    status = 400


class DownloadFailed(StorageError):
    status = 502


class DiskFull(StorageError):
    status = 507


class ConfigError(ForgeError):
    status = 400


class DeviceUnavailable(ConfigError):
    status = 400


class MissingExtra(ConfigError):
    status = 501

    def __init__(self, module: str, extra: str) -> None:
        self.module, self.extra = module, extra
        super().__init__(
            f"{module} is not installed; install it with: pip install 'ferrousforge[{extra}]'"
        )


class QueueFull(ForgeError):
    status = 503


class EngineUnreachable(ForgeError):
    status = 503


class RequestError(ForgeError):
    """A request refused at the HTTP boundary."""

    status = 400


class NotFound(RequestError):
    """A path the server does not have (a web app file, say)."""

    status = 404


class LimitExceeded(RequestError):
    """A request field over a configured limit; ``setting`` is the setting that raises it."""

    def __init__(self, what: str, value: object, limit: object, setting: str) -> None:
        self.setting = setting
        super().__init__(f"{what} is {value}, over the limit of {limit} ({setting})")


class InvalidTensor(RequestError):
    """An ``infer`` input that does not fit the model (its name, datatype or shape)."""


class UsageError(RequestError):
    """A magic or command used wrongly; the message says how to use it."""


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NameTaken(RequestError):
    status = 400


class Conflict(RequestError):
    status = 409


class PayloadTooLarge(RequestError):
    status = 413


class RateLimited(RequestError):
    status = 429

    def __init__(self, message: str, retry_after: float, should_retry: bool = True) -> None:
        self.retry_after = retry_after
        self.should_retry = should_retry  # False: a daily limit; clients should not sleep on it
        super().__init__(f"{message}; retry after {retry_after:.0f} s")


class RequestTimeout(RequestError):
    status = 504


def wire(e: ForgeError) -> dict[str, Any]:
    """``e``'s class and fields, for an HTTP error body (the message travels beside them)."""
    fields = {k: v for k, v in vars(e).items() if isinstance(v, str | int | float | bool)}
    return {"type": type(e).__name__, "fields": fields}


def rebuild(message: str, status: int, kind: object, fields: object) -> ForgeError:
    """The error a server answered: its own class (a ForgeError of this module) with its
    fields and message when the body names them, else the class its status maps to."""
    cls = getattr(sys.modules[__name__], kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, ForgeError)):
        cls = _BY_STATUS.get(status, ForgeError)
    err = cls.__new__(cls)  # the server's message as is, whatever cls.__init__ takes
    Exception.__init__(err, message)
    for key, value in (fields if isinstance(fields, dict) else {}).items():
        if isinstance(key, str) and not key.startswith("_"):
            setattr(err, key, value)
    if err.status != status and status >= 400:
        err.status = status
    return err


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


_BY_STATUS: dict[int, type[ForgeError]] = {
    400: RequestError,
    401: Unauthorized,
    403: Forbidden,
    404: ModelNotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedFormat,
    422: InvalidModelFile,
    429: RateLimited,
    501: MissingExtra,
    503: QueueFull,
    504: RequestTimeout,
    507: InsufficientMemory,
}
