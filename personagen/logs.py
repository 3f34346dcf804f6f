"""Logging setup, with a filter that keeps secret values out of every log record."""

from __future__ import annotations

import logging
import os

_SECRET_ENV_HINTS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def secret_values() -> list[str]:
    """Values of environment variables that look like secrets (long enough to be worth masking)."""
    return [
        value
        for name, value in os.environ.items()
        if any(hint in name.upper() for hint in _SECRET_ENV_HINTS) and len(value) >= 8
    ]


def mask_secrets(text: str, secrets: list[str] | None = None) -> str:
    for secret in secrets if secrets is not None else secret_values():
        text = text.replace(secret, "****")
    return text


class SecretFilter(logging.Filter):
    """Replaces secret values in the final message, whatever the logger or the arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "openai", "urllib3", "filelock", "matplotlib", "faiss"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
