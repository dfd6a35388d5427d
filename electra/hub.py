"""Whether the Hugging Face hub can be reached from here, asked quickly.

Without a network the hub's clients retry each request for about half a minute before they
fail; resolving the hub's host name answers in a fraction of a second. A proxy in the
environment is trusted to reach it (the name may resolve only beyond the proxy).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def unreachable() -> str | None:
    """Why the hub cannot be reached from here (offline mode, or its host name does not
    resolve), or None when it may be."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in PROXIES):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"{host} does not resolve here"
    return None


def cache_only_if_unreachable() -> str | None:
    """Where the hub cannot be reached, put its clients in offline mode (HF_HUB_OFFLINE), so that
    they answer from the local cache at once instead of retrying; call it before `datasets` is
    first imported (which reads the setting). The reason, or None when the hub may be reached."""
    why = unreachable()
    if why is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return why


def failure(why: str | None, e: Exception) -> str:
    """What a hub load that raised `e` says: the unreachable hub where that is why, else the error."""
    return f"not in the local cache, and the hub cannot be reached: {why}" if why else f"{type(e).__name__}: {e}"
