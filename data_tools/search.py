"""Image URLs per class from Google's Custom Search JSON API (``searchType=image``): the downloader's input.

One query per class folder name (through a template such as ``"{class} exterior photo"``), paged ten results at
a time up to the API's limit of 100 results per query, with a minimum interval between requests, retries with
back-off on rate limits (HTTP 429, 403 ``rateLimitExceeded``) and server errors, and a clean stop when the daily
quota is spent (what was found so far is written; ``resume`` continues the next day).

The documented request and response (developers.google.com/custom-search/v1/reference/rest/v1/cse/list)::

    GET {base}?key=KEY&cx=ENGINE_ID&q=QUERY&searchType=image&num=1..10&start=1..91[&safe=active&imgType=...]
    200 {"items": [{"link": URL, "title": ..., "mime": ..., "image": {"contextLink": ..., "width": ..., ...}}],
         "queries": {"nextPage": [{"startIndex": 11, ...}]}}
    4xx/5xx {"error": {"code": 403, "message": ..., "errors": [{"reason": "dailyLimitExceeded", ...}]}}

The key and the engine id are read from environment variables (never from a command-line flag, which would land
in the shell history and the process list), and they never appear in a log line or an error message.

Output: a CSV with ``url, class, query, rank, title, mime, width, height, context_url`` and a JSON report beside
it (``<output stem>_report.json``, per class: query, requests, results, complete or the error).
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlencode, urlsplit

from data_tools.common import DataToolError, Progress, split_folders, track

LOG = logging.getLogger("ws_dan.data_tools.search")

DEFAULT_API_BASE_URL = "https://www.googleapis.com/customsearch/v1"
API_KEY_ENV = "GOOGLE_API_KEY"
ENGINE_ID_ENV = "GOOGLE_CSE_ID"
#: The API returns no result past the 100th of a query (``start + num - 1 <= 100``) and at most 10 per request.
MAX_RESULTS = 100
PAGE_SIZE = 10
DEFAULT_TEMPLATE = "{class}"
DEFAULT_MIN_INTERVAL = 1.0
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 2.0
MAX_RETRY_AFTER = 120.0
#: A response larger than this is not a search result page.
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
OUTPUT_FIELDS = ("url", "class", "query", "rank", "title", "mime", "width", "height", "context_url")
#: 403/429 reasons that mean "slow down" (retried) and "no more today" (the run stops).
RATE_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
QUOTA_REASONS = ("dailyLimitExceeded", "quotaExceeded", "dailyLimitExceededUnreg")


class SearchError(DataToolError):
    """The API refused the request for a reason retrying cannot fix (bad key or engine id, bad parameter)."""


class QuotaExceeded(SearchError):
    """The daily quota is spent: the run stops; resume later."""


@dataclass
class ApiError:
    """An error response: HTTP status, the API's message and reasons, and a Retry-After delay if given."""

    status: int
    message: str
    reasons: list[str]
    retry_after: Optional[float] = None

    def describe(self) -> str:
        why = f" ({', '.join(self.reasons)})" if self.reasons else ""
        return f"HTTP {self.status}{why}: {self.message}" if self.message else f"HTTP {self.status}{why}"


def _parse_error(status: int, body: bytes, retry_after: Optional[str]) -> ApiError:
    message, reasons = "", []
    try:
        err = json.loads(body.decode("utf-8", "replace")).get("error", {})
        if isinstance(err, dict):
            message = str(err.get("message", ""))[:300]
            reasons = [str(e.get("reason")) for e in err.get("errors", []) or [] if isinstance(e, dict) and e.get("reason")]
            if err.get("status") and not reasons:
                reasons = [str(err["status"])]
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace").strip()
    delay = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
    return ApiError(status, message, reasons, min(delay, MAX_RETRY_AFTER) if delay is not None else None)


def _is_daily_quota(err: ApiError) -> bool:
    text = err.message.lower()
    return any(r in QUOTA_REASONS for r in err.reasons) or "per day" in text or "daily" in text


class RateLimiter:
    """At most one request start per ``min_interval`` seconds (thread-safe); ``sleep`` is injectable for tests."""

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


@dataclass
class SearchClient:
    """A minimal client of the Custom Search JSON API for image search.

    ``params`` adds documented optional parameters (``imgType``, ``imgSize``, ``rights``...); SafeSearch is on
    unless ``params`` says ``safe="off"``.
    """

    api_key: str
    engine_id: str
    base_url: str = DEFAULT_API_BASE_URL
    min_interval: float = DEFAULT_MIN_INTERVAL
    timeout: float = 30.0
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    params: dict = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0

    def __post_init__(self) -> None:
        if not self.api_key or not self.engine_id:
            raise SearchError(f"the API key and the search engine id are needed (environment variables "
                              f"{API_KEY_ENV} and {ENGINE_ID_ENV})")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise SearchError(f"--api-base-url {self.base_url}: expected an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            LOG.warning("--api-base-url %s is plain http: the API key would travel unencrypted", self.base_url)
        self._limiter = RateLimiter(self.min_interval, sleep=self.sleep)
        self._rng = random.Random(0)

    @classmethod
    def from_env(cls, environ: Optional[dict] = None, **kwargs: Any) -> "SearchClient":
        """A client with the key and engine id from ``GOOGLE_API_KEY`` / ``GOOGLE_CSE_ID``."""
        import os

        env = os.environ if environ is None else environ
        missing = [v for v in (API_KEY_ENV, ENGINE_ID_ENV) if not env.get(v, "").strip()]
        if missing:
            raise SearchError(f"environment variable(s) {', '.join(missing)} not set: export {API_KEY_ENV} (an API "
                              f"key with the Custom Search API enabled) and {ENGINE_ID_ENV} (the Programmable "
                              f"Search Engine id, 'cx', with image search on)")
        return cls(env[API_KEY_ENV].strip(), env[ENGINE_ID_ENV].strip(), **kwargs)

    def _get(self, query: dict) -> tuple[int, bytes, Optional[str]]:
        url = f"{self.base_url}?{urlencode({'key': self.api_key, 'cx': self.engine_id, **query})}"
        req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "ws-dan-toolkit"})
        self._limiter.wait()
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(MAX_RESPONSE_BYTES + 1), None
        except urllib.error.HTTPError as e:  # the error body holds the API's explanation
            with e:
                return e.code, e.read(MAX_RESPONSE_BYTES), e.headers.get("Retry-After")

    def page(self, query: str, start: int, num: int) -> dict:
        """One page of results (``start`` 1-based, ``num`` 1..10) as the API's JSON.

        Retries timeouts, connection errors, 429, 5xx and 403 rate-limit answers; raises :class:`QuotaExceeded`
        when the daily quota is spent and :class:`SearchError` for other refusals (the message never includes
        the key).
        """
        if not 1 <= num <= PAGE_SIZE or start < 1 or start + num - 1 > MAX_RESULTS:
            raise SearchError(f"page start={start} num={num}: the API serves at most {MAX_RESULTS} results, "
                              f"{PAGE_SIZE} per request")
        params = {"q": query, "searchType": "image", "num": num, "start": start, "safe": "active", **self.params}
        last = ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                status, body, retry_after = self._get(params)
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError,
                    ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"network error ({reason})"
            else:
                if status == 200:
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise SearchError(f"query {query!r}: response larger than {MAX_RESPONSE_BYTES} bytes")
                    try:
                        data = json.loads(body.decode("utf-8"))
                    except ValueError:
                        last = "the response is not JSON"
                        data = None
                    if isinstance(data, dict):
                        return data
                else:
                    err = _parse_error(status, body, retry_after)
                    last = err.describe()
                    if status in (403, 429) and _is_daily_quota(err):
                        raise QuotaExceeded(f"query {query!r}: quota exhausted: {last}")
                    rate_limited = status == 429 or (status == 403 and any(r in RATE_REASONS for r in err.reasons))
                    if not (rate_limited or status >= 500):
                        hint = " (check the API key, the engine id and that the Custom Search API is enabled)" \
                            if status in (400, 401, 403) else ""
                        raise SearchError(f"query {query!r}: the API refused the request: {last}{hint}")
                    wait = err.retry_after
            if attempt < self.retries:
                if wait is None:
                    wait = self.backoff * (2 ** attempt) * (1 + 0.25 * self._rng.random())
                LOG.warning("query %r (start %d): %s; retrying in %.1fs", query, start, last, wait)
                self.sleep(wait)
        raise SearchError(f"query {query!r}: gave up after {self.retries + 1} attempts: {last}")

    def search(self, query: str, count: int) -> list[dict]:
        """Up to ``count`` (at most 100) distinct http(s) image links for ``query``, in the API's order."""
        count = min(int(count), MAX_RESULTS)
        results: list[dict] = []
        seen: set[str] = set()
        start = 1
        while len(results) < count and start <= MAX_RESULTS:
            num = min(PAGE_SIZE, MAX_RESULTS - start + 1)
            data = self.page(query, start, num)
            items = data.get("items") or []
            for k, item in enumerate(items):
                link = str(item.get("link") or "").strip()
                if not link or urlsplit(link).scheme.lower() not in ("http", "https") or link in seen:
                    continue
                seen.add(link)
                image = item.get("image") or {}
                results.append({"url": link, "rank": start + k, "title": str(item.get("title") or "")[:200],
                                "mime": item.get("mime") or "", "width": image.get("width") or "",
                                "height": image.get("height") or "", "context_url": image.get("contextLink") or ""})
                if len(results) >= count:
                    break
            next_page = ((data.get("queries") or {}).get("nextPage") or [{}])[0]
            if not items or not next_page.get("startIndex"):
                break  # no more results for this query
            start = max(int(next_page["startIndex"]), start + 1)
        return results


# ---------------------------------------------------------------------------------------------------------------
# Queries per class, and the whole job


def class_names(data_dir) -> list[str]:
    """The class folder names of ``data_dir`` (a split such as train/, or a dataset root: then its train/)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataToolError(f"{data_dir}: expected a folder of class folders (e.g. my_cars/train), found "
                            f"{'nothing (the path does not exist)' if not data_dir.exists() else 'a file'}")
    splits = split_folders(data_dir)
    if splits:
        train = [p for p in splits if p.name.lower() == "train"]
        if not train:
            raise DataToolError(f"{data_dir}: holds split folders ({', '.join(p.name for p in splits)}) but no "
                                f"train/; pass the split whose class folders to search for")
        LOG.info("%s: using the class folders of %s", data_dir, train[0])
        data_dir = train[0]
    names = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataToolError(f"{data_dir}: has no class sub-folders (expected {data_dir}/<class>/)")
    return names


def make_query(template: str, class_name: str) -> str:
    """The query for a class: ``template`` with ``{class}`` replaced by the class name (underscores as spaces)."""
    if "{class}" not in template:
        raise DataToolError(f"--query-template {template!r}: expected a template containing {{class}}, e.g. "
                            f"'{{class}} exterior photo'")
    return " ".join(template.replace("{class}", class_name.replace("_", " ")).split())


def report_path(output) -> Path:
    """The JSON report written beside the output CSV."""
    output = Path(output)
    return output.with_name(output.stem + "_report.json")


def search_images(data_dir, output, client: SearchClient, per_class: int = 100, template: str = DEFAULT_TEMPLATE,
                  classes: Optional[Sequence[str]] = None, resume: bool = False, overwrite: bool = False,
                  progress: Progress = False) -> dict:
    """Search every class of ``data_dir`` and write the URL list ``output`` (CSV, the downloader's input).

    The CSV and the report are rewritten after each class, so a stop (quota, Ctrl-C, an error) keeps the classes
    done; ``resume`` keeps the classes an earlier run completed and searches the others. An existing output
    needs ``resume`` or ``overwrite``. A spent daily quota ends the run early with ``summary["stopped"]`` set.
    Raises :class:`SearchError` for refusals retrying cannot fix (after writing what was found).
    """
    from ws_dan.io import read_csv_rows, write_csv, write_json

    if not 1 <= per_class <= MAX_RESULTS:
        raise DataToolError(f"--per-class {per_class}: expected 1 to {MAX_RESULTS} (the API's limit per query)")
    names = list(classes) if classes is not None else class_names(data_dir)
    queries = {c: make_query(template, c) for c in names}
    output = Path(output)
    if output.is_dir():
        raise DataToolError(f"{output}: expected a CSV file name for the URL list, found a folder")
    if data_dir is not None and Path(data_dir).resolve() in output.resolve().parents:
        # A CSV inside the class folders would be scanned (and skipped) by every tool as a stray file.
        raise DataToolError(f"{output}: would be written inside the dataset folder {data_dir}; choose a path "
                            f"outside it")
    rows: list[dict] = []
    report: dict = {"classes": {}}
    if output.exists():
        if resume:
            old = json.loads(report_path(output).read_text(encoding="utf-8")) if report_path(output).is_file() else {}
            done = {c for c, r in old.get("classes", {}).items()
                    if r.get("complete") and r.get("query") == queries.get(c) and r.get("per_class", 0) >= per_class}
            rows = [r for r in read_csv_rows(output) if r.get("class") in done]
            report["classes"] = {c: old["classes"][c] for c in done}
            LOG.info("resuming: %d class(es) already searched", len(done))
        elif not overwrite:
            raise DataToolError(f"{output}: exists; pass --resume to continue an interrupted search or --overwrite "
                                f"to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_csv(output, rows, OUTPUT_FIELDS)
        write_json(report_path(output), report)

    stopped = None
    start_requests = client.requests
    todo = [c for c in names if c not in report["classes"]]
    try:
        for name in track(todo, total=len(todo), desc="searching", progress=progress):
            query = queries[name]
            entry = {"query": query, "per_class": per_class, "results": 0, "complete": False, "error": ""}
            report["classes"][name] = entry
            before = client.requests
            try:
                found = client.search(query, per_class)
            except QuotaExceeded as e:
                entry["error"] = str(e)
                stopped = str(e)
                break
            finally:
                entry["requests"] = client.requests - before
            rows += [{"class": name, "query": query, **r} for r in found]
            entry.update(results=len(found), complete=True)
            LOG.debug("%s: %d results from %d request(s)", name, len(found), entry["requests"])
            save()
    except SearchError as e:
        report["classes"][name]["error"] = str(e)
        report["stopped"] = str(e)
        save()
        raise
    report["stopped"] = stopped
    save()
    complete = [c for c, r in report["classes"].items() if r.get("complete")]
    summary = {
        "output": str(output), "report": str(report_path(output)), "classes": len(names),
        "classes_complete": len(complete), "classes_left": [c for c in names if c not in complete],
        "urls": len(rows), "requests": client.requests - start_requests, "per_class": per_class,
        "template": template, "stopped": stopped,
        "fewest_results": min((report["classes"][c]["results"] for c in complete), default=0),
    }
    return summary
