"""Fetch one image URL into a sink with the downloader's rules, on the shared HTTP layer (data_tools.http).

The rules, each on every redirect hop: http(s) only, no credentials in the URL, no port 0, no control characters
(:func:`data_tools.http.check_url`); at most ``max_redirects`` redirects, loops detected; a timeout on connecting
and on every read and a total time per attempt; a size cap checked against ``Content-Length`` *and* counted while
streaming; a ``text/*`` response is given up after its first 16 bytes unless they carry an image signature (an HTML
"soft 404"); at most ``max_per_host`` requests to one host at a time. Whether the bytes decode as an image is
decided by the caller (``ws_dan.common.images``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import BinaryIO, Optional

from data_tools.http import RETRY_STATUSES, USER_AGENT, HttpClient, HttpError, check_url, parse_retry_after
from ws_dan.common.images import sniff_bytes
from ws_dan.common.io import InputError

__all__ = ["FetchError", "FetchInfo", "Fetcher", "check_url", "USER_AGENT"]

#: The downloader's error is the HTTP layer's: one class, one set of messages.
FetchError = HttpError

DEFAULT_TIMEOUT = 15.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_MAX_PER_HOST = 2
_SNIFF_BYTES = 16


@dataclass
class FetchInfo:
    """What a successful fetch wrote to the sink."""

    final_url: str
    bytes: int
    content_type: str
    redirects: int


class Fetcher:
    """GETs image URLs with every limit applied to every hop; thread-safe (see the module docstring)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, total_timeout: Optional[float] = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_redirects: int = DEFAULT_MAX_REDIRECTS,
                 max_per_host: int = DEFAULT_MAX_PER_HOST, user_agent: str = USER_AGENT,
                 use_env_proxy: bool = True, ssl_context=None):
        if timeout <= 0 or max_bytes <= 0 or max_redirects < 0 or max_per_host < 1:
            raise InputError("timeout and max_bytes must be positive, max_redirects >= 0, max_per_host >= 1")
        self.max_bytes = int(max_bytes)
        self.client = HttpClient(timeout=timeout, total_timeout=total_timeout, max_redirects=max_redirects,
                                 max_per_host=max_per_host, user_agent=user_agent, use_env_proxy=use_env_proxy,
                                 ssl_context=ssl_context)
        self.timeout = self.client.timeout
        self.total_timeout = self.client.total_timeout

    def fetch(self, url: str, sink: BinaryIO, cancel: Optional[threading.Event] = None) -> FetchInfo:
        """GET ``url`` (following redirects within the limits) and write the body to ``sink``.

        Raises :class:`FetchError`; nothing is written to ``sink`` for a redirect or an error status (a transfer
        that fails half-way leaves a partial body: the caller discards the sink). Setting ``cancel`` stops a
        transfer between two reads (Ctrl-C need not wait for a large file to finish).
        """
        with self.client.open(url, policy=check_url, headers={"Accept": "image/*,*/*;q=0.5"}) as resp:
            if resp.status != 200:
                retry = resp.status in RETRY_STATUSES
                raise FetchError(f"HTTP {resp.status} {resp.reason}".strip(), retryable=retry, status=resp.status,
                                 retry_after=parse_retry_after(resp.header("Retry-After")) if retry else None)
            content_type = resp.content_type
            # A text response (an HTML error page, a "soft 404") is given up after its first bytes, unless they
            # carry an image signature (some servers label everything text/plain). Other types are not trusted
            # either way: whether the bytes decode decides, later.
            check_head = content_type.startswith("text/")
            head = b""
            total = 0
            for chunk in resp.iter_bytes(self.max_bytes, cancel=cancel):
                if check_head:
                    head = (head + chunk)[:_SNIFF_BYTES]
                    if len(head) >= _SNIFF_BYTES:
                        if sniff_bytes(head) is None:
                            raise FetchError(f"not an image (the server sent {content_type})")
                        check_head = False
                total += len(chunk)
                sink.write(chunk)
            if check_head and sniff_bytes(head) is None:
                raise FetchError(f"not an image (the server sent {content_type})")
            return FetchInfo(resp.url, total, content_type, resp.redirects)
