"""Errors of the Hub functions, with what happened and what to do, and never the token."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP clients huggingface_hub may use: httpx2 (2.x) and httpx (1.x); both can be
    installed, and the one the installed huggingface_hub uses is not known in advance."""
    errors = []
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except ImportError:
            continue
    return tuple(errors)


__all__ = [
    "HubAuthenticationError",
    "HubError",
    "HubNetworkError",
    "HubServerError",
    "hub_errors",
    "redact",
    "translate_hub_error",
]

#: Exceptions that mean the Hub could not be reached at all.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (*_transport_errors(), OfflineModeIsEnabled, ConnectionError)


class HubError(RuntimeError):
    """A Hub operation failed; the message says what happened and what to do."""


class HubAuthenticationError(HubError):
    """No token, or the Hub refused the token (401/403)."""


class HubServerError(HubError):
    """The Hub answered with an error (a 5xx, or a 4xx other than an authentication error)."""


class HubNetworkError(HubError):
    """The Hub could not be reached (connection refused, DNS failure, timeout, offline mode)."""


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` (a token) replaced by `***`."""
    return text.replace(secret, "***") if secret else text


def translate_hub_error(err: BaseException, action: str, endpoint: str, token: str | None) -> HubError | None:
    """A [`HubError`] for an exception raised by `huggingface_hub` during `action` ("push to org/name", ...), or None
    when `err` is not a Hub or network failure. The token is redacted from the message."""
    if isinstance(err, LocalEntryNotFoundError) and err.__cause__ is not None:
        # snapshot_download falls back to the cache when the Hub fails, then raises this from the Hub's error
        return translate_hub_error(err.__cause__, action, endpoint, token)
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        server_says = str(err).splitlines()[0] if str(err) else type(err).__name__
        if status in (401, 403):
            message = (
                f"Could not {action}: the Hub at {endpoint} refused the token (HTTP {status}: {server_says}). "
                "Check that the token is valid and has write access to this repo/namespace (`hf auth login`, "
                "or a new token in the HF_TOKEN environment variable)."
            )
            return HubAuthenticationError(redact(message, token))
        if status == 404:
            message = (
                f"Could not {action}: not found on the Hub at {endpoint} (HTTP 404: {server_says}). Check the repo id "
                "and revision, and that the token may read a private repo."
            )
            return HubServerError(redact(message, token))
        retry = " The Hub may be down or overloaded: retry later." if status and status >= 500 else ""
        message = f"Could not {action}: the Hub at {endpoint} answered HTTP {status}: {server_says}.{retry}"
        return HubServerError(redact(message, token))
    if isinstance(err, NETWORK_ERRORS):
        detail = str(err) or type(err).__name__
        message = (
            f"Could not {action}: the Hub at {endpoint} could not be reached ({type(err).__name__}: {detail}). "
            "Check the network connection, any proxy settings and HF_ENDPOINT, and that HF_HUB_OFFLINE is not set."
        )
        return HubNetworkError(redact(message, token))
    return None


@contextlib.contextmanager
def hub_errors(action: str, endpoint: str, token: str | None) -> Iterator[None]:
    """Within the block, Hub and network failures are raised as [`HubError`]s (see [`translate_hub_error`]), chained
    to the original; other exceptions pass through unchanged."""
    try:
        yield
    except Exception as err:
        hub_error = translate_hub_error(err, action, endpoint, token)
        if hub_error is None:
            raise
        raise hub_error from err
