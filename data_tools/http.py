"""The one HTTP layer of the data tools (image search and image download), on urllib3.

Why urllib3 and not ``urllib.request``: every redirect hop must pass the caller's policy *before* it is
requested (http(s) only; for an API client, the API's host only), the body must be streamed and counted against a
byte cap whatever ``Content-Length`` says, and timeouts must hold per connect, per read and per attempt. urllib3
gives each of these directly: ``redirect=False`` (we follow hops ourselves), ``preload_content=False`` streaming,
:class:`urllib3.Timeout`, and ``ProxyManager`` (CONNECT tunnels for https) for the proxies that the environment
names (``http_proxy`` / ``https_proxy`` / ``no_proxy``, read as ``urllib.request`` and requests read them).

Pieces:

* :func:`check_url`: the default policy, a plain http(s) URL with a host, no ``user:password@``, no control
  characters, no port 0. :func:`same_host_policy` adds "the API's scheme, host and port only".
* :class:`HttpClient`: ``open()`` follows redirects (at most ``max_redirects``, loops detected, each hop checked
  by the policy) and yields a :class:`Response` whose ``iter_bytes`` streams under the byte cap, the total
  deadline and an optional cancel event; at most ``max_per_host`` requests to one host at a time.
  ``get_json()`` is the API clients' call: body capped, JSON decoded, 429/5xx/network errors raised retryable.
* :class:`Backoff` and :func:`with_retries`: exponential back-off with jitter, ``delay = base * 2**attempt *
  (1 + U(0, 0.25))``, or the server's ``Retry-After`` (seconds or an HTTP date), capped at ``cap`` seconds so
  that one server cannot park a worker for an hour.

Errors are :class:`HttpError` with a one-line ``reason`` that never contains a URL's query string (where API
keys travel).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import SplitResult, quote, urlencode, urljoin, urlsplit

import urllib3
from urllib3 import exceptions as u3

LOG = logging.getLogger(__name__)

#: The one User-Agent of every request the toolkit sends: Wikimedia's policy asks for the tool's name, version and
#: a way to reach its maintainers; other servers see the same honest name.
def _user_agent() -> str:
    """Tool name and version, and a way to reach the operator, as Wikimedia's User-Agent policy asks.

    The project has no public home page to name, so the contact is the user's own: WS_DAN_CONTACT (an e-mail
    address or URL) from the environment; without it the agent still names the tool and says how to add one."""
    contact = os.environ.get("WS_DAN_CONTACT", "").strip() or "contact: set WS_DAN_CONTACT"
    return f"ws-dan-toolkit/0.1.0 ({contact}; fine-grained image dataset curation) urllib3/{urllib3.__version__}"


USER_AGENT = _user_agent()

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Responses worth another attempt: the server is busy or failing now, not refusing this URL for good.
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)
#: Longest wait honoured from a Retry-After header.
MAX_RETRY_AFTER = 60.0
CHUNK = 64 * 1024
_LOOPBACK = ("localhost", "127.0.0.1", "::1")

T = TypeVar("T")


class HttpError(Exception):
    """A request that did not succeed; ``retryable`` when another attempt may (timeouts, 5xx, 429)."""

    def __init__(self, reason: str, retryable: bool = False, retry_after: Optional[float] = None,
                 status: Optional[int] = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


Policy = Callable[[str], SplitResult]


def shown(url: str, limit: int = 100) -> str:
    """``url`` for a message: without its query string (API keys travel there) and at most ``limit`` characters."""
    try:
        p = urlsplit(url)
        text = f"{p.scheme}://{p.netloc}{p.path}" if p.scheme else url.split("?")[0]
    except ValueError:
        text = url.split("?")[0]
    return text[:limit]


def check_url(url: str) -> SplitResult:
    """Parse ``url`` and refuse anything but a plain http(s) URL with a host (raises a final :class:`HttpError`)."""
    # Spaces are tolerated (user lists hold them; they are sent percent-encoded, as browsers do); control
    # characters would let a URL inject header lines.
    if not url or url != url.strip() or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise HttpError(f"malformed URL {url[:80]!r} (empty, or with control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise HttpError(f"malformed URL ({e})") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise HttpError(f"not an http(s) URL (scheme {parts.scheme.lower() or 'missing'!r}); only http and https "
                        f"are fetched")
    if not parts.hostname:
        raise HttpError("malformed URL (no host)")
    if parts.username is not None or parts.password is not None:
        raise HttpError("URL carries credentials (user:password@host); not supported")
    if port == 0:
        raise HttpError("malformed URL (port 0)")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def same_host_policy(base_url: str) -> Policy:
    """A policy for an API client: :func:`check_url`, and the same scheme, host and port as ``base_url``.

    An API that redirects elsewhere is either misconfigured or hijacked; in both cases the request (and its key)
    must not follow it.
    """
    want = _origin(check_url(base_url))

    def policy(url: str) -> SplitResult:
        parts = check_url(url)
        if _origin(parts) != want:
            raise HttpError(f"redirect to another host ({shown(url)}); only {want[0]}://{want[1]}:{want[2]} is "
                            f"followed")
        return parts

    return policy


def parse_retry_after(value: Optional[str], cap: float = MAX_RETRY_AFTER,
                      now: Callable[[], float] = time.time) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now()), cap)


@dataclass
class Backoff:
    """Exponential back-off with jitter; a server's Retry-After wins, both capped at ``cap`` seconds.

    The jitter spreads the retries of workers that failed together; ``seed`` makes a run repeatable.
    """

    base: float = 1.0
    cap: float = MAX_RETRY_AFTER
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        if retry_after is not None:
            return min(max(0.0, float(retry_after)), self.cap)
        with self._lock:
            jitter = 1 + 0.25 * self._rng.random()
        return min(self.base * (2 ** attempt) * jitter, self.cap)


def with_retries(call: Callable[[int], T], retries: int, backoff: Backoff,
                 sleep: Callable[[float], Any] = time.sleep,
                 on_retry: Optional[Callable[[int, HttpError, float], None]] = None) -> T:
    """``call(attempt)`` until it returns, retrying a retryable :class:`HttpError` at most ``retries`` times.

    The last error is raised as it is; ``on_retry(attempt, error, wait)`` is told before each wait.
    """
    for attempt in range(retries + 1):
        try:
            return call(attempt)
        except HttpError as e:
            if not e.retryable or attempt >= retries:
                raise
            wait = backoff.delay(attempt, e.retry_after)
            if on_retry is not None:
                on_retry(attempt, e, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _request_target(parts: SplitResult) -> str:
    # Percent-encode spaces and non-ASCII (user lists hold them); what is already encoded stays as it is.
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe="/?&=%:@!$'()*+,;~-._[]#")


class _NoReuseHTTPPool(urllib3.HTTPConnectionPool):
    """A pool that closes each connection when it comes back: every request gets a fresh one.

    We ask servers to close after each answer ("Connection: close"), and a server may send more than its
    Content-Length says; a pooled connection could then be reused just before the server closes it (or with the
    extra bytes still queued) and fail the next, unrelated request.
    """

    def _put_conn(self, conn) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(conn)


class _NoReuseHTTPSPool(urllib3.HTTPSConnectionPool):
    __doc__ = _NoReuseHTTPPool.__doc__
    _put_conn = _NoReuseHTTPPool._put_conn


def _no_reuse(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    manager.pool_classes_by_scheme = {"http": _NoReuseHTTPPool, "https": _NoReuseHTTPSPool}
    return manager


class Response:
    """A final (non-redirect) response; read it with :meth:`iter_bytes` or :meth:`read`, inside ``open()``."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str, redirects: int, client: HttpClient,
                 deadline: float, host: str):
        self._raw, self.url, self.redirects = raw, url, redirects
        self._client, self._deadline, self._host = client, deadline, host
        self.status: int = raw.status
        self.reason: str = raw.reason or ""
        self.headers = raw.headers

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""

    @property
    def content_type(self) -> str:
        return self.header("Content-Type").split(";")[0].strip().lower()

    def iter_bytes(self, max_bytes: int, cancel: Optional[threading.Event] = None) -> Iterator[bytes]:
        """The body in chunks; raises :class:`HttpError` past ``max_bytes`` (declared or counted), past the
        deadline, on ``cancel``, or on a broken transfer."""
        declared = self.header("Content-Length").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise HttpError(f"too large: Content-Length {int(declared)} bytes exceeds the limit of {max_bytes} "
                            f"(--max-bytes)")
        total = 0
        read = getattr(self._raw, "read1", None) or self._raw.read
        while True:
            if time.monotonic() > self._deadline:
                raise HttpError(f"gave up after {self._client.total_timeout:g}s (total time per attempt)",
                                retryable=True)
            if cancel is not None and cancel.is_set():
                raise HttpError("cancelled", retryable=True)
            try:
                chunk = read(CHUNK, decode_content=False)
            except Exception as e:  # urllib3 and socket errors: one line each
                raise self._client.describe(e, self._host) from None
            if not chunk:
                return
            total += len(chunk)
            if total > max_bytes:
                raise HttpError(f"too large: more than {max_bytes} bytes (--max-bytes)")
            yield chunk

    def read(self, max_bytes: int) -> bytes:
        return b"".join(self.iter_bytes(max_bytes))


@dataclass
class JsonResponse:
    """An API answer: status, headers, the decoded JSON (None when the body is not JSON) and a body excerpt."""

    status: int
    headers: Mapping[str, str]
    data: Any
    text: str
    url: str

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""

    def retry_error(self, what: str = "") -> Optional[HttpError]:
        """A retryable :class:`HttpError` (with the server's Retry-After) for 429/5xx answers, else None."""
        if self.status not in RETRY_STATUSES:
            return None
        return HttpError(f"HTTP {self.status}{': ' + what if what else ''}", retryable=True, status=self.status,
                         retry_after=parse_retry_after(self.header("Retry-After")))


class HttpClient:
    """Connection pools, proxies from the environment, per-host concurrency, redirects checked hop by hop.

    ``timeout`` bounds connecting and each read; ``total_timeout`` one attempt, redirects and body included
    (default ``4 * timeout``). Thread-safe.
    """

    def __init__(self, timeout: float = 15.0, total_timeout: Optional[float] = None, max_redirects: int = 5,
                 max_per_host: int = 2, user_agent: str = USER_AGENT, use_env_proxy: bool = True,
                 ssl_context: Any = None):
        if timeout <= 0 or max_redirects < 0 or max_per_host < 1:
            raise HttpError("timeout must be positive, max_redirects >= 0, max_per_host >= 1")
        self.timeout = float(timeout)
        self.total_timeout = float(total_timeout) if total_timeout else 4 * self.timeout
        self.max_redirects = int(max_redirects)
        self.max_per_host = int(max_per_host)
        self.user_agent = user_agent
        self.proxies = urllib.request.getproxies() if use_env_proxy else {}
        self._pool_kw = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self._direct = _no_reuse(urllib3.PoolManager(num_pools=64, maxsize=self.max_per_host, retries=False,
                                                     **self._pool_kw))
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    # -- plumbing
    @contextmanager
    def _host_slot(self, parts: SplitResult) -> Iterator[None]:
        key = f"{(parts.hostname or '').lower()}:{parts.port or ''}"
        with self._lock:
            sem = self._hosts.setdefault(key, threading.BoundedSemaphore(self.max_per_host))
        with sem:
            yield

    def _manager(self, parts: SplitResult) -> urllib3.PoolManager:
        proxy = self.proxies.get(parts.scheme.lower())
        host = (parts.hostname or "").lower()
        if not proxy or host in _LOOPBACK or host.startswith("127.") or urllib.request.proxy_bypass(host):
            return self._direct
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if not p.hostname:
            return self._direct
        with self._lock:
            if proxy not in self._proxied:
                headers = None
                if p.username:
                    headers = urllib3.make_headers(proxy_basic_auth=f"{p.username}:{p.password or ''}")
                bare = f"{p.scheme or 'http'}://{p.hostname}:{p.port or 8080}"
                self._proxied[proxy] = _no_reuse(urllib3.ProxyManager(
                    bare, proxy_headers=headers, num_pools=64, maxsize=self.max_per_host, retries=False,
                    **self._pool_kw))
            return self._proxied[proxy]

    def describe(self, e: BaseException, host: str) -> HttpError:
        """One retryable-or-not :class:`HttpError` for a network-level exception (no URL in the text)."""
        if isinstance(e, HttpError):
            return e
        if isinstance(e, u3.NameResolutionError):
            return HttpError(f"host not found ({host})", retryable=True)
        if isinstance(e, u3.NewConnectionError):
            return HttpError(f"connection error (cannot connect to {host})", retryable=True)
        if isinstance(e, (u3.ConnectTimeoutError, u3.ReadTimeoutError, TimeoutError)):
            return HttpError(f"timed out (no response or data for {self.timeout:g}s)", retryable=True)
        if isinstance(e, u3.SSLError):
            text = str(e)
            if "CERTIFICATE_VERIFY_FAILED" in text:
                return HttpError(f"TLS certificate not valid ({host})")
            return HttpError("connection error (TLS)", retryable=True)
        if isinstance(e, u3.ProxyError):
            return HttpError("connection error (proxy)", retryable=True)
        if isinstance(e, u3.ProtocolError):
            text = str(e)
            if "IncompleteRead" in text:
                return HttpError("connection closed early", retryable=True)
            return HttpError(f"connection error ({text.split('(')[0].strip() or 'protocol'})", retryable=True)
        if isinstance(e, (u3.LocationParseError, ValueError)):
            return HttpError(f"malformed URL ({type(e).__name__})")
        if isinstance(e, (u3.HTTPError, OSError)):
            return HttpError(f"network error ({type(e).__name__})", retryable=True)
        raise e

    # -- requests
    @contextmanager
    def open(self, url: str, policy: Policy = check_url, headers: Optional[Mapping[str, str]] = None,
             method: str = "GET", body: Optional[bytes] = None,
             deadline: Optional[float] = None) -> Iterator[Response]:
        """Request ``url``, following redirects that pass ``policy``, and yield the final :class:`Response`.

        Raises :class:`HttpError`: a refused URL or redirect, too many redirects, a loop, a timeout, a network
        error. Any status other than a redirect is yielded (the caller decides what a 404 means). Only GET and
        HEAD follow redirects; another method's redirect is refused.
        """
        deadline = deadline if deadline is not None else time.monotonic() + self.total_timeout
        base_headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity", "Connection": "close",
                        **(headers or {})}
        current = url
        seen = {url}
        for hop in range(self.max_redirects + 1):
            parts = policy(current)
            host = parts.hostname or ""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HttpError(f"gave up after {self.total_timeout:g}s (total time per attempt)", retryable=True)
            t = min(self.timeout, remaining)
            target = f"{parts.scheme.lower()}://{parts.netloc}{_request_target(parts)}"
            with self._host_slot(parts):
                try:
                    raw = self._manager(parts).urlopen(method, target, body=body, headers=base_headers,
                                                       redirect=False, retries=False, preload_content=False,
                                                       decode_content=False, timeout=urllib3.Timeout(connect=t, read=t))
                except Exception as e:
                    raise self.describe(e, host) from None
                try:
                    if raw.status not in REDIRECT_STATUSES:
                        yield Response(raw, current, hop, self, deadline, host)
                        return
                    location = raw.headers.get("Location")
                finally:
                    # Closed, not returned to the pool: one connection per request (as "Connection: close" asks),
                    # so a body not read to its end, or a lying Content-Length, cannot spoil the next request.
                    raw.close()
            if method not in ("GET", "HEAD"):
                raise HttpError(f"HTTP {raw.status} redirect of a {method} request; not followed")
            if not location:
                raise HttpError(f"HTTP {raw.status} redirect without a Location header")
            try:  # http.client decodes headers as Latin-1; a UTF-8 Location is the common case
                location = location.encode("latin-1").decode("utf-8")
            except UnicodeError:
                pass
            nxt = urljoin(current, location.strip())
            scheme = urlsplit(nxt).scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                raise HttpError(f"redirect to a non-http(s) URL ({scheme or 'no'} scheme: {shown(nxt)})")
            if nxt in seen:
                raise HttpError(f"redirect loop ({shown(current)} -> {shown(nxt)}, visited before)")
            seen.add(nxt)
            current = nxt
        raise HttpError(f"too many redirects (more than {self.max_redirects})")

    def get_json(self, url: str, params: Optional[Mapping[str, Any]] = None, policy: Optional[Policy] = None,
                 headers: Optional[Mapping[str, str]] = None, max_bytes: int = 5 * 1024 * 1024,
                 method: str = "GET", form: Optional[Mapping[str, Any]] = None) -> JsonResponse:
        """One API call: the answer of any status, its JSON decoded (``data`` None when it is not JSON); raises
        :class:`HttpError` for network errors (retryable) and for a refused redirect or a body over ``max_bytes``
        (final); :meth:`JsonResponse.retry_error` turns a 429/5xx into a retryable one.
        ``form`` sends a urlencoded POST body. Redirects stay on ``url``'s host by default."""
        full = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}" if params else url
        policy = policy or same_host_policy(url)
        hdrs = {"Accept": "application/json", **(headers or {})}
        body = None
        if form is not None:
            body = urlencode(form).encode("ascii")
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        with self.open(full, policy=policy, headers=hdrs, method=method, body=body) as resp:
            raw = resp.read(max_bytes)
            status, rheaders, final = resp.status, dict(resp.headers), resp.url
        text = raw[:300].decode("utf-8", "replace").strip()
        try:
            data = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            data = None
        lower_headers = urllib3.HTTPHeaderDict(rheaders)
        return JsonResponse(status, lower_headers, data, text, final)
