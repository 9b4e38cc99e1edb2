"""Wikimedia Commons through the MediaWiki Action API: free media files, licence and author per file.

The documented request (www.mediawiki.org/wiki/API:Search, API:Categorymembers, API:Imageinfo, API:Continue)::

    GET /w/api.php?action=query&format=json&formatversion=2&generator=search&gsrsearch=QUERY&gsrnamespace=6
        &gsrlimit=50&prop=imageinfo&iiprop=url|size|mime|extmetadata&iiextmetadatafilter=...&maxlag=5
        [&continue=gsroffset||&gsroffset=50]
    (category mode: generator=categorymembers&gcmtitle=Category:NAME&gcmtype=file&gcmlimit=50)
    200 {"batchcomplete": true, "continue": {"gsroffset": 50, "continue": "gsroffset||"},
         "query": {"pages": [{"pageid": 1, "ns": 6, "title": "File:X.jpg", "index": 1,
                              "imageinfo": [{"url": ..., "descriptionurl": ..., "width": ..., "height": ...,
                                             "mime": "image/jpeg", "extmetadata": {"LicenseShortName":
                                             {"value": "CC BY-SA 4.0"}, "LicenseUrl": {...}, "Artist": {...}}}]}]}}
    200 {"error": {"code": "maxlag", "info": ...}}  (with Retry-After): the servers are busy; retried

Licence, licence URL and artist come from ``extmetadata`` (the artist is HTML: reduced to its text). Commons has no
licence filter in the API, so ``--license`` is applied to each file here. Wikimedia asks for a descriptive
User-Agent (``data_tools.http.USER_AGENT``), few concurrent requests (one at a time here) and ``maxlag``.
"""

from __future__ import annotations

import html
import re
from typing import Any, Optional

from data_tools.http import HttpError, JsonResponse, check_url, parse_retry_after
from data_tools.licenses import normalise_license
from data_tools.search_backends.base import (
    ResponseError,
    SearchBackend,
    SearchError,
    add_if_new,
    as_int,
    expect,
    text,
)

DEFAULT_API_BASE_URL = "https://commons.wikimedia.org/w/api.php"
BATCH = 50
#: Results one query may reach here (Commons' search itself serves up to 10,000).
MAX_RESULTS = 1000
#: Decodable photo formats (SVG, PDF, TIFF scans of documents... are left out).
IMAGE_MIMES = ("image/jpeg", "image/png", "image/webp", "image/gif")
EXTMETADATA = "LicenseShortName|LicenseUrl|License|Artist|Credit|ObjectName|AttributionRequired|UsageTerms"
_TAGS = re.compile(r"<[^>]+>")


def _plain(value: Any, limit: int = 300) -> str:
    """Text of an extmetadata value (``{"value": "<a href=..>Name</a>"}``), without HTML."""
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, str):
        return ""
    return " ".join(html.unescape(_TAGS.sub(" ", value)).split())[:limit]


class CommonsBackend(SearchBackend):
    name = "commons"
    needs_key = False
    max_results = MAX_RESULTS
    default_base_url = DEFAULT_API_BASE_URL

    def __init__(self, category: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.category = category

    def describe_settings(self) -> dict:
        return {**super().describe_settings(), "category": self.category}

    def check(self, resp: JsonResponse, query: str) -> None:
        data = resp.data
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = text(err.get("code"))
            if code in ("maxlag", "ratelimited", "readonly") or resp.status in (429, 503):
                raise HttpError(f"Commons busy ({code or resp.status})", retryable=True,
                                retry_after=parse_retry_after(resp.header("Retry-After")) or 5.0)
            raise SearchError(f"query {query!r}: Commons refused the request: {code}: {text(err.get('info'), 200)}")
        super().check(resp, query)

    def _params(self, query: str) -> dict:
        common = {"action": "query", "format": "json", "formatversion": "2", "prop": "imageinfo",
                  "iiprop": "url|size|mime|extmetadata", "iiextmetadatafilter": EXTMETADATA, "maxlag": "5"}
        if self.category:
            title = query if query.lower().startswith("category:") else f"Category:{query}"
            return {**common, "generator": "categorymembers", "gcmtitle": title, "gcmtype": "file",
                    "gcmlimit": BATCH, **self.params}
        return {**common, "generator": "search", "gsrsearch": query, "gsrnamespace": "6", "gsrlimit": BATCH,
                **self.params}

    def search(self, query: str, count: int) -> list[dict]:
        count = min(int(count), self.max_results)
        results: list[dict] = []
        seen: set[str] = set()
        cont: dict = {}
        rank = 0
        while len(results) < count:
            data = self.call(self.base_url, {**self._params(query), **cont}, query).data
            if "query" not in data:  # no match at all: MediaWiki leaves "query" out
                break
            q = expect(data.get("query"), dict, "'query'", query)
            pages = q.get("pages", [])
            if isinstance(pages, dict):  # formatversion=1: pages keyed by page id
                pages = list(pages.values())
            expect(pages, list, "'query.pages'", query)
            for k, page in enumerate(pages):
                expect(page, dict, f"'query.pages[{k}]'", query)
            pages = sorted(pages, key=lambda p: as_int(p.get("index")) if as_int(p.get("index")) != "" else 1 << 30)
            for page in pages:
                rank += 1
                row = self._row(page, rank)
                if row is not None and add_if_new(results, seen, row) and len(results) >= count:
                    return results
            nxt = data.get("continue")
            if nxt is None:
                break
            cont = {str(k): v for k, v in expect(nxt, dict, "'continue'", query).items()
                    if isinstance(v, (str, int))}
            if not cont:
                break
        return results

    def _row(self, page: dict, rank: int) -> Optional[dict]:
        infos = page.get("imageinfo")
        if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
            return None  # a file page without file (deleted, or info still to come in a continuation)
        info = infos[0]
        url = text(info.get("url"), 2000)
        try:
            check_url(url)
        except HttpError:
            return None
        mime = text(info.get("mime"), 50)
        if mime not in IMAGE_MIMES:
            return None
        meta = info.get("extmetadata") if isinstance(info.get("extmetadata"), dict) else {}
        short = _plain(meta.get("LicenseShortName"))
        code, version = normalise_license(short or _plain(meta.get("License")))
        if not code:
            code, version = normalise_license(_plain(meta.get("License")))
        if self.licenses and code not in self.licenses:
            return None
        title = text(page.get("title"), 200)
        name = title.split(":", 1)[1] if title.lower().startswith("file:") else title
        creator = _plain(meta.get("Artist"))
        landing = text(info.get("descriptionurl"), 2000)
        license_url = _plain(meta.get("LicenseUrl"), 500)
        shown_license = short or code
        attribution = f'"{name}" by {creator or "unknown author"}, {shown_license or "licence unknown"}' + \
            (f" ({license_url})" if license_url else "") + " via Wikimedia Commons"
        pageid = as_int(page.get("pageid"))
        return {"url": url, "rank": rank, "title": name, "mime": mime, "width": as_int(info.get("width")),
                "height": as_int(info.get("height")), "context_url": landing, "source": "commons",
                "license": code or short, "license_version": version, "license_url": license_url,
                "creator": creator, "attribution": attribution, "landing_url": landing,
                "_ids": [f"commons-page:{pageid}"] if pageid != "" else []}


__all__ = ["CommonsBackend", "ResponseError"]
