"""What every image-search backend shares: the interface, errors, rate limiting, API calls, response checks.

A backend (Openverse, Wikimedia Commons, Google Custom Search; a paid one such as Brave or SerpApi would be one
more small module) turns a query into result rows with :data:`OUTPUT_FIELDS`. It subclasses
:class:`SearchBackend`, sets ``name``, ``needs_key``, ``max_results`` and implements :meth:`SearchBackend.search`;
:meth:`SearchBackend.call` makes one API request through the shared HTTP layer (``data_tools.http``): at most one
request start per ``min_interval`` seconds, redirects only on the API's own scheme, host and port, retries with
back-off or the server's Retry-After on 429, 5xx and network errors, and the backend's own :meth:`check` of each
answer.

Errors: :class:`SearchError` (the API refuses: bad key, bad parameter; the run stops), :class:`QuotaExceeded`
(no more requests today; the run stops cleanly, ``--resume`` continues), :class:`ResponseError` (this query got a
malformed or unfollowable answer; its class is marked incomplete and the run goes on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from data_tools.http import (
    MAX_RETRY_AFTER,
    USER_AGENT,
    Backoff,
    HttpClient,
    HttpError,
    JsonResponse,
    same_host_policy,
    with_retries,
)
from data_tools.licenses import LICENSE_FIELDS
from ws_dan.common.io import InputError

LOG = logging.getLogger(__name__)

OUTPUT_FIELDS = ("url", "class", "query", "rank", "title", "mime", "width", "height", "context_url", *LICENSE_FIELDS)
DEFAULT_MIN_INTERVAL = 1.0
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 2.0
#: A response larger than this is not a search result page.
MAX_RESPONSE_BYTES = 5 * 1024 * 1024


class SearchError(InputError):
    """The API refused the request for a reason retrying cannot fix (bad key or engine id, bad parameter)."""


class QuotaExceeded(SearchError):
    """The quota is spent for now: the run stops; resume later."""


class ResponseError(SearchError):
    """One query's answer cannot be used (malformed JSON, wrong shape, a redirect elsewhere): its class is
    marked incomplete and the run continues."""


class RateLimiter:
    """At most one request start per ``min_interval`` seconds (thread-safe); ``sleep`` is injectable for tests.

    :meth:`hold` pushes the next start further out, when a server reports that its window is used up.
    """

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.min_interval = max(0.0, float(min_interval))
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.min_interval

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + max(0.0, seconds))


def expect(value: Any, kind: type | tuple, what: str, query: str) -> Any:
    """``value`` when it is a ``kind``; otherwise a :class:`ResponseError` naming the field and what was found."""
    if isinstance(value, bool) and kind in (int, (int, float), float):
        value = None  # JSON true is not a number
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise ResponseError(f"query {query!r}: malformed response: {what} is {found}, expected {_json_name(names)}")
    return value


def _json_name(names: str) -> str:
    return names.replace("dict", "an object").replace("list", "a list").replace("str", "a string") \
        .replace("int", "a number").replace("float", "a number")


def as_int(value: Any) -> Any:
    """An int from a JSON number or digit string; '' for anything else (a size is optional)."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return ""


def text(value: Any, limit: int = 300) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def photo_keys(row: Mapping[str, Any]) -> set[str]:
    """Keys under which the same photo is known in several sources (Openverse indexes Commons and Flickr).

    The image URL (host lower-cased, path unquoted, Commons thumbnails reduced to their file), the landing page,
    Commons file names and page ids, Flickr photo ids.
    """
    keys: set[str] = set(row.get("_ids") or ())
    for field_name in ("url", "landing_url", "context_url"):
        url = row.get(field_name) or ""
        if not isinstance(url, str) or "://" not in url:
            continue
        try:
            p = urlsplit(url)
        except ValueError:
            continue
        host = (p.hostname or "").lower()
        path = unquote(p.path)
        if field_name == "url":
            keys.add(f"url:{host}{path}?{p.query}")
        if host == "upload.wikimedia.org":
            parts = path.split("/")
            if "thumb" in parts and len(parts) >= 2:
                parts = parts[:-1]  # .../thumb/a/ab/Name.jpg/800px-Name.jpg -> Name.jpg
            keys.add("commons:" + _commons_name(parts[-1]))
        elif host.endswith("wikimedia.org") or host.endswith("wikipedia.org"):
            if "/wiki/File:" in path:
                keys.add("commons:" + _commons_name(path.split("/wiki/File:", 1)[1]))
            curid = parse_qs(p.query).get("curid")
            if curid:
                keys.add("commons-page:" + curid[0])
        elif host.endswith("flickr.com"):
            parts = [x for x in path.split("/") if x]
            if len(parts) >= 3 and parts[0] == "photos" and parts[2].isdigit():
                keys.add("flickr:" + parts[2])
    return keys


def add_if_new(rows: list[dict], seen: set[str], row: dict, keys: Optional[set[str]] = None) -> bool:
    """Append ``row`` to ``rows`` unless it is a photo already there; whether it was appended.

    A photo is known by its keys (:func:`photo_keys`, or ``keys`` where a source knows better): a row sharing
    any key with ``seen`` is a duplicate, and an appended row's keys join ``seen``. Search results hold the same
    photo under several URLs (a thumbnail, a mirror, another index), and the first one met, the best ranked, is
    the one kept."""
    keys = photo_keys(row) if keys is None else keys
    if keys & seen:
        return False
    seen |= keys
    rows.append(row)
    return True


def _commons_name(name: str) -> str:
    name = name.replace(" ", "_")
    return name[:1].upper() + name[1:]


class SearchBackend:
    """One image-search API. Subclasses set the class attributes and implement :meth:`search`."""

    #: the ``--source`` name
    name = ""
    #: whether it needs credentials (the default source is the first backend that does not)
    needs_key = False
    #: results one query can reach
    max_results = 100
    default_base_url = ""

    def __init__(self, base_url: Optional[str] = None, min_interval: float = DEFAULT_MIN_INTERVAL,
                 timeout: float = 30.0, retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
                 licenses: Optional[Sequence[str]] = None, params: Optional[dict] = None,
                 sleep: Callable[[float], None] = time.sleep, user_agent: str = USER_AGENT):
        self.base_url = base_url or self.default_base_url
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SearchError(f"--api-base-url {self.base_url}: expected an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            LOG.warning("--api-base-url %s is plain http: requests (and any key) would travel unencrypted",
                        self.base_url)
        self.min_interval, self.timeout, self.retries = min_interval, timeout, retries
        self.licenses = tuple(licenses) if licenses else None  # None: every licence
        self.params = dict(params or {})
        self.sleep = sleep
        self.requests = 0
        self.http = HttpClient(timeout=timeout, max_redirects=3, max_per_host=1, user_agent=user_agent)
        self._policy = same_host_policy(self.base_url)
        self._limiter = RateLimiter(min_interval, sleep=sleep)
        self._backoff = Backoff(backoff, cap=MAX_RETRY_AFTER)

    @property
    def backoff(self) -> float:
        return self._backoff.base

    @backoff.setter
    def backoff(self, value: float) -> None:
        self._backoff.base = value

    def describe_settings(self) -> dict:
        """What decides the results (compared on --resume)."""
        return {"source": self.name, "licenses": list(self.licenses) if self.licenses else "all",
                "params": dict(sorted(self.params.items()))}

    def check(self, resp: JsonResponse, query: str) -> None:
        """Raise for an answer that is not a usable result page: a retryable :class:`HttpError` (429, 5xx),
        :class:`QuotaExceeded`, :class:`SearchError` or :class:`ResponseError`. The default: 429/5xx retried,
        other non-200 refused, a body that is not a JSON object malformed."""
        err = resp.retry_error()
        if err is not None:
            raise err
        if resp.status != 200:
            raise SearchError(f"query {query!r}: the API refused the request: HTTP {resp.status}: {resp.text[:200]}")
        if not isinstance(resp.data, dict):
            found = "not JSON" if resp.data is None else f"a {type(resp.data).__name__}, expected an object"
            raise ResponseError(f"query {query!r}: malformed response: {found}")

    def call(self, url: str, params: Optional[Mapping[str, Any]], query: str, headers: Any = None,
             method: str = "GET", form: Optional[Mapping[str, Any]] = None) -> JsonResponse:
        """One API request with the rate limit, retries and :meth:`check` (messages never hold the query string
        of the URL, where keys travel)."""

        def attempt(n: int) -> JsonResponse:
            self._limiter.wait()
            self.requests += 1
            hdrs = headers() if callable(headers) else headers  # per attempt: a token may have been renewed
            resp = self.http.get_json(url, params, policy=self._policy, headers=hdrs, method=method, form=form,
                                      max_bytes=MAX_RESPONSE_BYTES)
            self.check(resp, query)
            return resp

        def on_retry(n: int, e: HttpError, wait: float) -> None:
            LOG.warning("%s: query %r: %s; retrying in %.1fs", self.name, query, e.reason, wait)

        try:
            return with_retries(attempt, self.retries, self._backoff, sleep=self.sleep, on_retry=on_retry)
        except HttpError as e:
            if e.retryable:
                raise SearchError(f"query {query!r}: gave up after {self.retries + 1} attempts: {e.reason}") from None
            raise ResponseError(f"query {query!r}: {e.reason}") from None

    def search(self, query: str, count: int) -> list[dict]:
        """Up to ``count`` distinct http(s) image results for ``query``, best first (rows of OUTPUT_FIELDS,
        without ``class`` and ``query``)."""
        raise NotImplementedError
