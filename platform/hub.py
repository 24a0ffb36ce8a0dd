"""Is the model hub reachable? One quick check shared by every loader of pretrained weights."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """False in HF offline mode or when the hub endpoint does not accept a TCP connection within ``timeout`` s,
    so that a loader on an offline machine fails in seconds with its own advice instead of after minutes of
    download retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
