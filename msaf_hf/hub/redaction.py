"""Keeping Hub tokens and other secrets out of logs, model cards and uploaded files."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["drop_secrets", "looks_like_secret_key", "redact", "sanitized_json", "scrub"]

logger = logging.getLogger(__name__)

_SECRET_KEY_RE = re.compile(r"token|secret|passw|api[_-]?key|credential", re.IGNORECASE)
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9_]{6,}")


def redact(text: str, token: str | None = None) -> str:
    """Remove a token (and anything that looks like a Hub token) from a message."""
    if isinstance(token, str) and token:
        text = text.replace(token, "***")
    return _HF_TOKEN_RE.sub("hf_***", text)


def looks_like_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (``hub_token``, ``api_key``, ``password``, ...)."""
    return _SECRET_KEY_RE.search(str(key)) is not None


def drop_secrets(params: Mapping[str, Any], token: str | None = None) -> dict[str, Any]:
    """A flat mapping (e.g. hyperparameters) without secret-looking keys or values."""
    clean: dict[str, Any] = {}
    for key, value in params.items():
        if looks_like_secret_key(key):
            continue
        if isinstance(value, str) and ((token and token in value) or _HF_TOKEN_RE.search(value)):
            continue
        clean[str(key)] = value
    return clean


def scrub(value: Any, token: str | None) -> Any:
    """Drop secret-named keys and redact token-looking strings, recursively."""
    if isinstance(value, Mapping):
        return {k: scrub(v, token) for k, v in value.items() if not looks_like_secret_key(k)}
    if isinstance(value, list):
        return [scrub(v, token) for v in value]
    if isinstance(value, str):
        return redact(value, token)
    return value


def sanitized_json(path: Path, token: str | None) -> bytes:
    """Content of a metrics/hyperparameters JSON file without secret-looking keys or values (the file's own
    bytes when it holds none; a file that is not JSON has its token-looking text redacted)."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError:
        return redact(raw.decode("utf-8", errors="replace"), token).encode("utf-8")
    clean = scrub(data, token)
    if clean == data:
        return raw
    logger.warning("Removed secret-looking entries from %s before uploading it", path.name)
    return (json.dumps(clean, indent=2, sort_keys=False) + "\n").encode("utf-8")
