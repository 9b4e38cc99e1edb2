"""Openverse (api.openverse.org), openly licensed images from Flickr, Wikimedia Commons, museums...: no key needed.

The documented API (docs.openverse.org, API reference)::

    GET  /v1/images/?q=QUERY&page=1&page_size=20[&license=by,by-sa&license_type=commercial&source=flickr
         &extension=jpg&aspect_ratio=wide&size=large&mature=false]
    200  {"result_count": N, "page_count": P, "page_size": 20, "page": 1,
          "results": [{"id", "title", "url", "foreign_landing_url", "creator", "license", "license_version",
                       "license_url", "provider", "source", "filetype", "width", "height", "attribution", ...}]}
    POST /v1/auth_tokens/token/  grant_type=client_credentials&client_id=..&client_secret=..
    200  {"access_token": "...", "token_type": "Bearer", "expires_in": 36000, "scope": "read write"}

Anonymous requests get the low anonymous rate and at most 20 results per page; with ``OPENVERSE_CLIENT_ID`` and
``OPENVERSE_CLIENT_SECRET`` in the environment (never a flag, never logged) the client fetches an OAuth2
client-credentials token and gets the registered rate (page size up to 500). Limits are respected as the server
reports them: ``X-RateLimit-Available-<scope>`` at 0 holds the next request back for a minute (a burst window)
or stops the run (a daily window), 429 waits its ``Retry-After``; pages stop at the reported ``page_count`` and
at the page depth Openverse allows (20 pages). One client, one request at a time: the terms forbid spreading
requests to dodge limits.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional
from urllib.parse import urljoin

from data_tools.http import HttpError, JsonResponse, check_url
from data_tools.licenses import normalise_license
from data_tools.search_backends.base import (
    QuotaExceeded,
    ResponseError,
    SearchBackend,
    SearchError,
    add_if_new,
    as_int,
    expect,
    text,
)

LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.openverse.org/v1/images/"
CLIENT_ID_ENV = "OPENVERSE_CLIENT_ID"
CLIENT_SECRET_ENV = "OPENVERSE_CLIENT_SECRET"
ANON_PAGE_SIZE = 20
AUTH_PAGE_SIZE = 500
#: Openverse serves at most 20 pages of one search.
MAX_PAGES = 20
#: How long a used-up burst window holds the next request back.
BURST_WAIT = 60.0
MIMES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
         "tiff": "image/tiff", "svg": "image/svg+xml"}


class OpenverseBackend(SearchBackend):
    name = "openverse"
    needs_key = False
    default_base_url = DEFAULT_API_BASE_URL

    def __init__(self, client_id: str = "", client_secret: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self._client_id, self._client_secret = client_id, client_secret
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._daily_spent = ""
        self.page_size = AUTH_PAGE_SIZE if client_id else ANON_PAGE_SIZE
        self.max_results = self.page_size * MAX_PAGES

    @classmethod
    def from_env(cls, environ: Optional[dict] = None, **kwargs: Any) -> OpenverseBackend:
        """Anonymous, or registered when both credential variables are set (one alone is an error)."""
        env = os.environ if environ is None else environ
        cid, secret = env.get(CLIENT_ID_ENV, "").strip(), env.get(CLIENT_SECRET_ENV, "").strip()
        if bool(cid) != bool(secret):
            raise SearchError(f"set both {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (a registered Openverse "
                              f"application), or neither (anonymous)")
        return cls(cid, secret, **kwargs)

    @property
    def token_url(self) -> str:
        return urljoin(self.base_url, "../auth_tokens/token/")

    def _auth_headers(self) -> dict:
        if not self._client_id:
            return {}
        if self._token is None or time.monotonic() > self._token_expires:
            resp = self.call(self.token_url, None, "(access token)", method="POST",
                             form={"grant_type": "client_credentials", "client_id": self._client_id,
                                   "client_secret": self._client_secret})
            token = resp.data.get("access_token")
            if not isinstance(token, str) or not token:
                raise SearchError("Openverse token endpoint: no access_token in the answer")
            expires = as_int(resp.data.get("expires_in"))
            self._token = token
            self._token_expires = time.monotonic() + (float(expires) if expires != "" else 3600.0) - 60
        return {"Authorization": f"Bearer {self._token}"}

    def check(self, resp: JsonResponse, query: str) -> None:
        self._read_rate_headers(resp)
        if resp.status == 401 and query == "(access token)":
            raise SearchError(f"Openverse refused the client credentials ({CLIENT_ID_ENV}/{CLIENT_SECRET_ENV}): "
                              f"HTTP 401")
        if resp.status == 401 and self._token is not None:
            self._token = None  # expired early: fetch a new one and try again
            raise HttpError("HTTP 401 (token expired)", retryable=True, retry_after=0)
        if resp.status == 429 and self._daily_spent:
            raise QuotaExceeded(f"query {query!r}: Openverse daily limit reached ({self._daily_spent})")
        super().check(resp, query)

    def _read_rate_headers(self, resp: JsonResponse) -> None:
        for name, value in resp.headers.items():
            low = name.lower()
            if not low.startswith("x-ratelimit-available-") or as_int(value) != 0:
                continue
            scope = low[len("x-ratelimit-available-"):]
            if "sustain" in scope or "day" in scope:
                self._daily_spent = scope
            else:
                LOG.info("openverse: %s window used up; waiting %.0fs before the next request", scope, BURST_WAIT)
                self._limiter.hold(BURST_WAIT)

    def search(self, query: str, count: int) -> list[dict]:
        count = min(int(count), self.max_results)
        results: list[dict] = []
        seen: set[str] = set()
        page_size = min(self.page_size, max(1, count))
        for page in range(1, MAX_PAGES + 1):
            if self._daily_spent:
                raise QuotaExceeded(f"query {query!r}: Openverse daily limit reached ({self._daily_spent}); "
                                    f"resume tomorrow")
            params = {"q": query, "page": page, "page_size": page_size, "mature": "false", **self.params}
            if self.licenses:
                params["license"] = ",".join(self.licenses)
            resp = self.call(self.base_url, params, query, headers=self._auth_headers)
            data = resp.data
            items = expect(data.get("results"), list, "'results'", query)
            for k, item in enumerate(items):
                expect(item, dict, f"'results[{k}]'", query)
                row = self._row(item, (page - 1) * page_size + k + 1)
                if row is not None and add_if_new(results, seen, row) and len(results) >= count:
                    return results
            page_count = as_int(data.get("page_count"))
            if not items or (page_count != "" and page >= page_count):
                break
        return results

    def _row(self, item: dict, rank: int) -> Optional[dict]:
        url = text(item.get("url"), 2000)
        try:
            check_url(url)
        except HttpError:
            return None
        code, version = normalise_license(text(item.get("license")))
        if self.licenses and code not in self.licenses:
            return None  # the API filtered already; a result outside the filter is not trusted
        provider = text(item.get("source")) or text(item.get("provider"))
        landing = text(item.get("foreign_landing_url"), 2000)
        filetype = text(item.get("filetype")).lower()
        return {"url": url, "rank": rank, "title": text(item.get("title"), 200), "mime": MIMES.get(filetype, ""),
                "width": as_int(item.get("width")), "height": as_int(item.get("height")), "context_url": landing,
                "source": f"openverse/{provider}" if provider else "openverse", "license": code or
                text(item.get("license")), "license_version": text(item.get("license_version")) or version,
                "license_url": text(item.get("license_url"), 500), "creator": text(item.get("creator")),
                "attribution": text(item.get("attribution"), 1000), "landing_url": landing}


__all__ = ["OpenverseBackend", "ResponseError"]
