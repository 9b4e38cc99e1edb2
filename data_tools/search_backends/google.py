"""Google's Custom Search JSON API (``searchType=image``): for the customers who still have it.

Google closed the API to new customers; existing ones have until 2027-01-01 (``CLOSES``). The documented request
and response (developers.google.com/custom-search/v1/reference/rest/v1/cse/list)::

    GET {base}?key=KEY&cx=ENGINE_ID&q=QUERY&searchType=image&num=1..10&start=1..91[&safe=active&imgType=...]
    200 {"items": [{"link": URL, "title": ..., "mime": ..., "image": {"contextLink": ..., "width": ..., ...}}],
         "queries": {"nextPage": [{"startIndex": 11, ...}]}}
    4xx/5xx {"error": {"code": 403, "message": ..., "errors": [{"reason": "dailyLimitExceeded", ...}]}}

Paged ten results at a time up to the API's limit of 100 results per query; rate limits (HTTP 429, 403
``rateLimitExceeded``) and server errors are retried; a spent daily quota stops the run. The key and the engine id
come from environment variables only and never appear in a log line or an error message. Results carry no
licence (``--license`` maps to the API's ``rights`` filter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from data_tools.http import HttpError, JsonResponse, check_url, parse_retry_after
from data_tools.search_backends.base import (
    QuotaExceeded,
    ResponseError,
    SearchBackend,
    SearchError,
    add_if_new,
    as_int,
    expect,
    photo_keys,
    text,
)

DEFAULT_API_BASE_URL = "https://www.googleapis.com/customsearch/v1"
API_KEY_ENV = "GOOGLE_API_KEY"
ENGINE_ID_ENV = "GOOGLE_CSE_ID"
CLOSES = "2027-01-01"
#: The API returns no result past the 100th of a query (``start + num - 1 <= 100``) and at most 10 per request.
MAX_RESULTS = 100
PAGE_SIZE = 10
#: 403/429 reasons that mean "slow down" (retried) and "no more today" (the run stops).
RATE_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
QUOTA_REASONS = ("dailyLimitExceeded", "quotaExceeded", "dailyLimitExceededUnreg")
#: --license codes -> the API's ``rights`` values.
RIGHTS = {"cc0": "cc_publicdomain", "pdm": "cc_publicdomain", "by": "cc_attribute", "by-sa": "cc_sharealike",
          "by-nc": "cc_noncommercial", "by-nd": "cc_nonderived"}


@dataclass
class ApiError:
    """An error response: HTTP status, the API's message and reasons, and a Retry-After delay if given."""

    status: int
    message: str
    reasons: list
    retry_after: Optional[float] = None

    def describe(self) -> str:
        why = f" ({', '.join(self.reasons)})" if self.reasons else ""
        return f"HTTP {self.status}{why}: {self.message}" if self.message else f"HTTP {self.status}{why}"


def _parse_error(resp: JsonResponse) -> ApiError:
    message, reasons = "", []
    err = resp.data.get("error") if isinstance(resp.data, dict) else None
    if isinstance(err, dict):
        message = text(err.get("message"))
        errors = err.get("errors") if isinstance(err.get("errors"), list) else []
        reasons = [str(e["reason"]) for e in errors if isinstance(e, dict) and isinstance(e.get("reason"), str)]
        if isinstance(err.get("status"), str) and not reasons:
            reasons = [err["status"]]
    elif resp.data is None:
        message = resp.text[:200]
    return ApiError(resp.status, message, reasons, parse_retry_after(resp.header("Retry-After")))


def _is_daily_quota(err: ApiError) -> bool:
    t = err.message.lower()
    return any(r in QUOTA_REASONS for r in err.reasons) or "per day" in t or "daily" in t


class SearchClient(SearchBackend):
    """A minimal client of the Custom Search JSON API for image search.

    ``params`` adds documented optional parameters (``imgType``, ``imgSize``, ``rights``...); SafeSearch is on
    unless ``params`` says ``safe="off"``.
    """

    name = "google"
    needs_key = True
    max_results = MAX_RESULTS
    default_base_url = DEFAULT_API_BASE_URL

    def __init__(self, api_key: str, engine_id: str, base_url: str = DEFAULT_API_BASE_URL, **kwargs: Any):
        if not api_key or not engine_id:
            raise SearchError(f"the API key and the search engine id are needed (environment variables "
                              f"{API_KEY_ENV} and {ENGINE_ID_ENV})")
        super().__init__(base_url=base_url, **kwargs)
        self._key, self._cx = api_key, engine_id
        if self.licenses:
            rights = sorted({RIGHTS[c] for c in self.licenses if c in RIGHTS})
            if rights:
                self.params.setdefault("rights", "|".join(rights))

    @classmethod
    def from_env(cls, environ: Optional[dict] = None, **kwargs: Any) -> SearchClient:
        """A client with the key and engine id from ``GOOGLE_API_KEY`` / ``GOOGLE_CSE_ID``."""
        env = os.environ if environ is None else environ
        missing = [v for v in (API_KEY_ENV, ENGINE_ID_ENV) if not env.get(v, "").strip()]
        if missing:
            raise SearchError(f"environment variable(s) {', '.join(missing)} not set: export {API_KEY_ENV} (an API "
                              f"key with the Custom Search API enabled) and {ENGINE_ID_ENV} (the Programmable "
                              f"Search Engine id, 'cx', with image search on); the API closes on {CLOSES} and takes "
                              f"no new customers: use --source openverse or commons without a key")
        return cls(env[API_KEY_ENV].strip(), env[ENGINE_ID_ENV].strip(), **kwargs)

    def check(self, resp: JsonResponse, query: str) -> None:
        if resp.status == 200:
            if not isinstance(resp.data, dict):
                raise ResponseError(f"query {query!r}: malformed response: "
                                    f"{'not JSON' if resp.data is None else 'a ' + type(resp.data).__name__}")
            return
        err = _parse_error(resp)
        last = err.describe()
        if resp.status in (403, 429) and _is_daily_quota(err):
            raise QuotaExceeded(f"query {query!r}: quota exhausted: {last}")
        rate_limited = resp.status == 429 or (resp.status == 403 and any(r in RATE_REASONS for r in err.reasons))
        if rate_limited or resp.status >= 500:
            raise HttpError(last, retryable=True, retry_after=err.retry_after, status=resp.status)
        hint = " (check the API key, the engine id and that the Custom Search API is enabled)" \
            if resp.status in (400, 401, 403) else ""
        raise SearchError(f"query {query!r}: the API refused the request: {last}{hint}")

    def page(self, query: str, start: int, num: int) -> dict:
        """One page of results (``start`` 1-based, ``num`` 1..10) as the API's JSON.

        Retries timeouts, connection errors, 429, 5xx and 403 rate-limit answers; raises :class:`QuotaExceeded`
        when the daily quota is spent, :class:`ResponseError` for a malformed answer and :class:`SearchError`
        for other refusals (the message never includes the key).
        """
        if not 1 <= num <= PAGE_SIZE or start < 1 or start + num - 1 > MAX_RESULTS:
            raise SearchError(f"page start={start} num={num}: the API serves at most {MAX_RESULTS} results, "
                              f"{PAGE_SIZE} per request")
        params = {"key": self._key, "cx": self._cx, "q": query, "searchType": "image", "num": num, "start": start,
                  "safe": "active", **self.params}
        return self.call(self.base_url, params, query).data

    def search(self, query: str, count: int) -> list[dict]:
        """Up to ``count`` (at most 100) distinct http(s) image links for ``query``, in the API's order."""
        count = min(int(count), MAX_RESULTS)
        results: list[dict] = []
        seen: set[str] = set()
        start = 1
        while len(results) < count and start <= MAX_RESULTS:
            num = min(PAGE_SIZE, MAX_RESULTS - start + 1)
            data = self.page(query, start, num)
            items = data.get("items", [])
            expect(items, list, "'items'", query)
            for k, item in enumerate(items):
                expect(item, dict, f"'items[{k}]'", query)
                link = text(item.get("link"), 2000)
                try:
                    check_url(link)
                except HttpError:
                    continue  # not http(s), credentials...: the downloader would refuse it anyway
                image = item.get("image") if isinstance(item.get("image"), dict) else {}
                row = {"url": link, "rank": start + k, "title": text(item.get("title"), 200),
                       "mime": text(item.get("mime"), 50), "width": as_int(image.get("width")),
                       "height": as_int(image.get("height")), "context_url": text(image.get("contextLink"), 2000),
                       "source": self.name, "landing_url": text(image.get("contextLink"), 2000)}
                keys = {f"url:{link}"} | {k_ for k_ in photo_keys({"url": link}) if k_.startswith("commons")}
                if add_if_new(results, seen, row, keys) and len(results) >= count:
                    break
            queries = data.get("queries", {})
            expect(queries, dict, "'queries'", query)
            next_pages = queries.get("nextPage", [])
            expect(next_pages, list, "'queries.nextPage'", query)
            if not items or not next_pages:
                break  # no more results for this query
            nxt = expect(next_pages[0], dict, "'queries.nextPage[0]'", query)
            index = as_int(nxt.get("startIndex"))
            if index == "":
                raise ResponseError(f"query {query!r}: malformed response: 'queries.nextPage[0].startIndex' is "
                                    f"{nxt.get('startIndex')!r}, expected a number")
            start = max(index, start + 1)
        return results
