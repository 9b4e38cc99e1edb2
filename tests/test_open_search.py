"""Openverse and Wikimedia Commons backends against local stand-ins on 127.0.0.1 shaped as their APIs document;
cross-source dedupe, licence filters, credentials, the script, and ATTRIBUTION.csv through merge and stats."""

from __future__ import annotations

import csv
import json
import logging
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import run_script

from data_tools.attribution import write_attribution
from data_tools.licenses import normalise_license, parse_license_filter
from data_tools.search import search_images
from data_tools.search_backends import DEFAULT_SOURCE
from data_tools.search_backends.commons import CommonsBackend
from data_tools.search_backends.openverse import OpenverseBackend

CLIENT_ID, SECRET = "my-client-id", "s3cr3t-openverse-value"
LICENSES = ["by", "by-sa", "cc0", "by-nc", "pdm"]


class FakeApi:
    """A threaded JSON server; ``route(method, path, query, form, headers)`` returns (status, body, headers)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.hits: Counter = Counter()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method):
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                form = {}
                if method == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode()).items()}
                with api.lock:
                    api.requests.append({"method": method, "path": parts.path, "q": q, "form": form,
                                         "headers": dict(self.headers)})
                status, body, headers = api.route(method, parts.path, q, form, self.headers)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def once(self, key) -> bool:
        with self.lock:
            self.hits[key] += 1
            return self.hits[key] == 1

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeOpenverse(FakeApi):
    """``GET /v1/images/`` and ``POST /v1/auth_tokens/token/`` as documented. ``totals[q]`` results per query
    (default 45); licences cycle through LICENSES; ``license=`` filters. Query words: ``busy`` -> 429 with
    Retry-After once; ``broken`` -> 500 once; ``burst`` -> X-RateLimit-Available-anon_burst: 0; ``daily`` ->
    anon_sustained 0; ``elsewhere`` -> redirect to another host. Anonymous page_size > 20 -> 401."""

    def __init__(self):
        super().__init__()
        self.totals: dict[str, int] = {}
        self.commons_overlap: list[int] = []
        self.token = "tok-123"

    def route(self, method, path, q, form, headers):
        if path == "/v1/auth_tokens/token/" and method == "POST":
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != SECRET \
                    or form.get("grant_type") != "client_credentials":
                return 401, {"error": "invalid_client"}, {}
            return 200, {"access_token": self.token, "scope": "read write", "expires_in": 36000,
                         "token_type": "Bearer"}, {}
        if path != "/v1/images/":
            return 404, {"detail": "Not found."}, {}
        authed = headers.get("Authorization") == f"Bearer {self.token}"
        query, page, size = q.get("q", ""), int(q.get("page", 1)), int(q.get("page_size", 20))
        if size > 20 and not authed:
            return 401, {"detail": "Authentication credentials were not provided."}, {}
        if "busy" in query and self.once("busy " + query):
            return 429, {"detail": "Request was throttled. Expected available in 1 second."}, {"Retry-After": "1"}
        if "broken" in query and self.once("broken " + query):
            return 500, b"Internal Server Error", {}
        if "elsewhere" in query:
            return 302, b"", {"Location": self.base.replace("127.0.0.1", "localhost") + path}
        wanted = q.get("license", "").split(",") if q.get("license") else None
        every = [k for k in range(1, self.totals.get(query, 45) + 1)
                 if wanted is None or LICENSES[k % len(LICENSES)] in wanted]
        slug = query.replace(" ", "-")
        results = []
        for k in every[(page - 1) * size: page * size]:
            lic = LICENSES[k % len(LICENSES)]
            if k in self.commons_overlap:  # a Commons file that Openverse indexes too
                url = f"https://upload.wikimedia.org/wikipedia/commons/a/ab/{query.replace(' ', '_')}_{k}.jpg"
                landing, source = f"https://commons.wikimedia.org/w/index.php?curid={9000 + k}", "wikimedia"
            else:
                url = f"https://live.staticflickr.com/65535/{slug}-{k}.jpg"
                landing, source = f"https://www.flickr.com/photos/someone/{5000 + k}", "flickr"
            results.append({"id": f"id-{k}", "title": f"{query} {k}", "indexed_on": "2024-01-01T00:00:00Z",
                            "foreign_landing_url": landing, "url": url, "creator": f"Creator {k}",
                            "creator_url": None, "license": lic, "license_version": "2.0" if lic != "cc0" else "1.0",
                            "license_url": f"https://creativecommons.org/licenses/{lic}/2.0/", "provider": source,
                            "source": source, "category": "photograph", "filesize": 12345, "filetype": "jpg",
                            "tags": [], "attribution": f'"{query} {k}" by Creator {k} is licensed under CC {lic}.',
                            "fields_matched": ["title"], "mature": False, "height": 480, "width": 640,
                            "thumbnail": f"{self.base}/v1/images/id-{k}/thumb/", "detail_url": "",
                            "related_url": "", "unstable__sensitivity": []})
        page_count = max(1, -(-len(every) // size))
        headers_out = {"X-RateLimit-Limit-anon_burst": "20/min", "X-RateLimit-Available-anon_burst": "19",
                       "X-RateLimit-Limit-anon_sustained": "200/day", "X-RateLimit-Available-anon_sustained": "150"}
        if "burst" in query:
            headers_out["X-RateLimit-Available-anon_burst"] = "0"
        if "daily" in query:
            headers_out["X-RateLimit-Available-anon_sustained"] = "0"
        return 200, {"result_count": len(every), "page_count": page_count, "page_size": size, "page": page,
                     "results": results, "warnings": []}, headers_out


class FakeCommons(FakeApi):
    """``GET /w/api.php`` (action=query, formatversion=2) for generator=search and generator=categorymembers,
    with ``continue``; ``maxlag`` in the query -> a maxlag error with Retry-After once; ``nothing`` -> no
    results (no "query" key); ``Category:Empty`` -> empty category. Every 4th file is CC BY-NC (dropped by the
    default filter), every 7th is a PDF."""

    def __init__(self):
        super().__init__()
        self.total = 23

    def route(self, method, path, q, form, headers):
        if path != "/w/api.php" or q.get("action") != "query" or q.get("prop") != "imageinfo":
            return 400, {"error": {"code": "badparams", "info": "bad"}}, {}
        if q.get("generator") == "search":
            term, offset_key = q["gsrsearch"], "gsroffset"
            if q.get("gsrnamespace") != "6":
                return 400, {"error": {"code": "badparams", "info": "namespace"}}, {}
            limit = int(q.get("gsrlimit", 10))
        elif q.get("generator") == "categorymembers":
            term, offset_key, limit = q["gcmtitle"], "gcmcontinue", int(q.get("gcmlimit", 10))
            if term == "Category:Empty":
                return 200, {"batchcomplete": True}, {}
        else:
            return 400, {"error": {"code": "badparams", "info": "generator"}}, {}
        if "maxlag" in term and self.once(term):
            return 200, {"error": {"code": "maxlag", "info": "Waiting for a database server: 7 seconds lagged."}}, \
                {"Retry-After": "2"}
        if "nothing" in term:
            return 200, {"batchcomplete": True}, {}
        offset = int(q.get(offset_key, 0) or 0)
        slug = term.replace(" ", "_").replace("Category:", "")
        pages = []
        for k in range(offset + 1, min(offset + limit, self.total) + 1):
            lic = ("CC BY-NC 4.0", "cc-by-nc-4.0") if k % 4 == 0 else ("CC BY-SA 4.0", "cc-by-sa-4.0")
            mime = "application/pdf" if k % 7 == 0 else "image/jpeg"
            name = f"{slug}_{k}.jpg"
            pages.append({"pageid": 9000 + k, "ns": 6, "title": f"File:{name}", "index": k - offset,
                          "imagerepository": "local",
                          "imageinfo": [{"size": 123456, "width": 1600, "height": 1200,
                                         "url": f"https://upload.wikimedia.org/wikipedia/commons/a/ab/{name}",
                                         "descriptionurl": f"https://commons.wikimedia.org/wiki/File:{name}",
                                         "descriptionshorturl":
                                             f"https://commons.wikimedia.org/w/index.php?curid={9000 + k}",
                                         "mime": mime, "extmetadata": {
                                             "LicenseShortName": {"value": lic[0], "source": "commons-desc-page"},
                                             "License": {"value": lic[1], "source": "commons-templates"},
                                             "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0",
                                                            "source": "commons-desc-page"},
                                             "Artist": {"value": f'<a href="//commons.wikimedia.org/wiki/User:U{k}">'
                                                                 f'User &amp; {k}</a>', "source": "commons-desc-page"},
                                             "AttributionRequired": {"value": "true"}}}]})
        pages.reverse()  # the API does not promise page order: "index" gives the search rank
        body = {"batchcomplete": True, "query": {"pages": pages}}
        if offset + limit < self.total:
            body["continue"] = {offset_key: offset + limit, "continue": "gsroffset||" if offset_key == "gsroffset"
                                else "-||"}
        return 200, body, {}


@pytest.fixture
def openverse():
    fake = FakeOpenverse()
    yield fake
    fake.close()


@pytest.fixture
def commons():
    fake = FakeCommons()
    yield fake
    fake.close()


def ov(fake, **kw):
    slept = []
    b = OpenverseBackend(base_url=fake.base + "/v1/images/", min_interval=0, backoff=0.01, retries=2,
                         sleep=slept.append, licenses=parse_license_filter(None), **kw)
    b.slept = slept
    return b


def cm(fake, **kw):
    slept = []
    kw.setdefault("licenses", parse_license_filter(None))
    b = CommonsBackend(base_url=fake.base + "/w/api.php", min_interval=0, backoff=0.01, retries=2,
                       sleep=slept.append, **kw)
    b.slept = slept
    return b


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_licence_codes_and_filters():
    assert normalise_license("CC BY-SA 4.0") == ("by-sa", "4.0")
    assert normalise_license("cc-by-nc-4.0") == ("by-nc", "4.0")
    assert normalise_license("Public domain")[0] == "pdm" and normalise_license("CC0")[0] == "cc0"
    assert normalise_license("GFDL") == ("", "")
    assert parse_license_filter(None) == ("cc0", "pdm", "by", "by-sa")
    assert parse_license_filter(["all"]) is None
    assert "by-nd" in parse_license_filter(["commercial"]) and "by-nc" not in parse_license_filter(["commercial"])
    assert parse_license_filter(["by,cc0"]) == ("by", "cc0")
    with pytest.raises(ValueError, match="--license 'gpl'"):
        parse_license_filter(["gpl"])
    assert DEFAULT_SOURCE == "openverse"


def test_openverse_paging_filters_and_limits(openverse):
    b = ov(openverse)
    rows = b.search("red car", 30)
    # 45 results, the default filter keeps by, by-sa, cc0, pdm (4 of 5 licences): 36; 30 wanted, pages of 20
    assert len(rows) == 30 and [int(r["page"]) for r in (x["q"] for x in openverse.requests)] == [1, 2]
    assert all(int(x["q"]["page_size"]) == 20 for x in openverse.requests)  # the anonymous cap
    assert openverse.requests[0]["q"]["license"] == "cc0,pdm,by,by-sa"
    assert {r["license"] for r in rows} <= {"cc0", "pdm", "by", "by-sa"}
    r = rows[0]
    assert r["source"] == "openverse/flickr" and r["creator"].startswith("Creator") and r["width"] == 640
    assert r["landing_url"].startswith("https://www.flickr.com/") and r["mime"] == "image/jpeg"
    assert r["attribution"] and r["license_url"].startswith("https://creativecommons.org/")
    # paging stops at the reported page_count
    openverse.requests.clear()
    assert len(b.search("small", 100)) == 36 and len(openverse.requests) == 2
    openverse.totals["none"] = 0
    assert b.search("none", 10) == []
    # 429 + Retry-After and a 500: retried, the server's delay honoured
    b2 = ov(openverse)
    assert len(b2.search("busy broken", 5)) == 5 and b2.slept[0] == 1.0 and len(b2.slept) == 2
    # a used-up burst window holds the next request back; a used-up daily window stops the run
    b3 = ov(openverse)
    b3.search("burst", 25)
    assert 59 <= b3.slept[-1] <= 60
    from data_tools.search import QuotaExceeded

    with pytest.raises(QuotaExceeded, match="daily"):
        ov(openverse).search("daily", 30)


def test_openverse_credentials_from_the_environment_never_logged(openverse, tmp_path, caplog):
    b = OpenverseBackend.from_env({"OPENVERSE_CLIENT_ID": CLIENT_ID, "OPENVERSE_CLIENT_SECRET": SECRET},
                                  base_url=openverse.base + "/v1/images/", min_interval=0, sleep=lambda s: None)
    train = tmp_path / "train"
    (train / "blue car").mkdir(parents=True)
    with caplog.at_level(logging.DEBUG):
        s = search_images(train, tmp_path / "u.csv", b, per_class=40)
    token_calls = [r for r in openverse.requests if r["path"] == "/v1/auth_tokens/token/"]
    assert len(token_calls) == 1 and token_calls[0]["method"] == "POST"
    searches = [r for r in openverse.requests if r["path"] == "/v1/images/"]
    assert all(r["headers"].get("Authorization") == "Bearer tok-123" for r in searches)
    assert int(searches[0]["q"]["page_size"]) == 40  # registered: larger pages
    assert s["urls"] == 40  # no licence filter given to the backend: every licence
    everything = caplog.text + (tmp_path / "u.csv").read_text() + (tmp_path / "u_report.json").read_text()
    assert SECRET not in everything and CLIENT_ID not in everything and "tok-123" not in everything
    assert all(SECRET not in json.dumps(r["q"]) for r in openverse.requests)  # never in a URL either
    bad = OpenverseBackend.from_env({"OPENVERSE_CLIENT_ID": CLIENT_ID, "OPENVERSE_CLIENT_SECRET": "wrong"},
                                    base_url=openverse.base + "/v1/images/", min_interval=0, sleep=lambda s: None)
    from data_tools.search import SearchError

    with pytest.raises(SearchError, match="refused the client credentials") as e:
        bad.search("x", 5)
    assert "wrong" not in str(e.value)
    with pytest.raises(SearchError, match="both"):
        OpenverseBackend.from_env({"OPENVERSE_CLIENT_ID": CLIENT_ID})


def test_openverse_redirect_elsewhere_and_malformed(openverse, tmp_path):
    train = tmp_path / "train"
    for name in ("elsewhere", "fine"):
        (train / name).mkdir(parents=True)
    s = search_images(train, tmp_path / "u.csv", ov(openverse), per_class=5)
    assert "redirect to another host" in s["classes_incomplete"]["elsewhere"] and s["classes_complete"] == 1
    openverse.route = lambda *a: (200, {"result_count": 1, "results": {"url": "x"}}, {})
    s = search_images(train, tmp_path / "u2.csv", ov(openverse), per_class=5)
    assert all("'results' is a dict, expected an object" not in w and "'results'" in w
               for w in s["classes_incomplete"].values()) and s["classes_complete"] == 0


def test_commons_search_continuation_category_and_licences(commons):
    commons.total = 60
    b = cm(commons)
    rows = b.search("Acura TL", 100)
    # 60 files, less 8 PDFs (every 7th) and the CC BY-NC ones (every 4th: 15, 2 of them PDFs) = 39, in order
    assert len(rows) == 39 and [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    assert rows[0]["title"] == "Acura_TL_1.jpg" and rows[0]["license"] == "by-sa"
    assert rows[0]["license_version"] == "4.0" and rows[0]["creator"] == "User & 1"  # HTML reduced to text
    assert rows[0]["landing_url"] == "https://commons.wikimedia.org/wiki/File:Acura_TL_1.jpg"
    assert "via Wikimedia Commons" in rows[0]["attribution"] and rows[0]["source"] == "commons"
    offsets = [r["q"].get("gsroffset") for r in commons.requests]
    assert offsets == [None, "50"]  # the "continue" values sent back as given
    assert commons.requests[1]["q"]["continue"] == "gsroffset||"
    first = commons.requests[0]
    assert first["q"]["iiprop"] == "url|size|mime|extmetadata" and first["q"]["gsrnamespace"] == "6"
    assert first["q"]["maxlag"] == "5" and "ws-dan-toolkit/" in first["headers"]["User-Agent"]
    assert "WS_DAN_CONTACT" in first["headers"]["User-Agent"]  # Wikimedia's User-Agent policy: a contact
    everything = cm(commons, licenses=None).search("Acura TL", 100)
    assert len(everything) == 52 and "by-nc" in {r["license"] for r in everything}  # --license all
    commons.requests.clear()
    cat = cm(commons, category=True).search("Acura TL Sedan 2012", 5)
    assert len(cat) == 5 and commons.requests[0]["q"]["gcmtitle"] == "Category:Acura TL Sedan 2012"
    assert commons.requests[0]["q"]["gcmtype"] == "file"
    assert cm(commons, category=True).search("Empty", 5) == [] and cm(commons).search("nothing", 5) == []
    busy = cm(commons)
    assert len(busy.search("maxlag car", 3)) == 3 and busy.slept == [2.0]  # maxlag: Retry-After honoured


def test_same_photo_from_two_sources_appears_once(openverse, commons, tmp_path, monkeypatch):
    """Openverse indexes Commons: a Commons file found by both sources is kept once (from the first source)."""
    commons.total = 6
    openverse.totals["dup car"] = 6
    openverse.commons_overlap = [1, 2, 3]  # Openverse results 1-3 are Commons files dup_car_1..3.jpg
    train = tmp_path / "data" / "train"
    (train / "dup car").mkdir(parents=True)
    out = tmp_path / "urls.csv"
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    monkeypatch.delenv("OPENVERSE_CLIENT_SECRET", raising=False)
    s = run_script("search_images", [
        "--data-dir", str(train), "--output", str(out), "--source", "openverse,commons", "--license", "all",
        "--per-class", "50", "--min-interval", "0", "--no-progress",
        "--api-base-url", f"openverse={openverse.base}/v1/images/", "--api-base-url",
        f"commons={commons.base}/w/api.php"])
    rows = read_rows(out)
    assert s["sources"] == ["openverse", "commons"]
    names = Counter(r["url"].rsplit("/", 1)[1] for r in rows if "wikimedia" in r["url"])
    assert names == {f"dup_car_{k}.jpg": 1 for k in range(1, 7)}  # 1-3 once (from Openverse), 4-6 from Commons
    assert [r["source"] for r in rows if r["url"].endswith("dup_car_1.jpg")] == ["openverse/wikimedia"]
    assert len(rows) == 6 + 3  # openverse's 6 (3 Flickr + 3 Commons files) + Commons files 4-6
    header = list(rows[0])
    assert header[:9] == ["url", "class", "query", "rank", "title", "mime", "width", "height", "context_url"]
    assert header[9:] == ["source", "license", "license_version", "license_url", "creator", "attribution",
                          "landing_url"]


def test_script_help_and_default_source(openverse, tmp_path, capsys):
    import search_images

    text = search_images.get_args_parser().format_help()
    assert "2027-01-01" in text and "openverse" in text
    assert "(default: openverse)" in text.replace("\n", " ").replace("  ", " ") or "default: openverse" in text
    train = tmp_path / "train"
    (train / "grey car").mkdir(parents=True)
    s = run_script("search_images", ["--data-dir", str(train), "--output", str(tmp_path / "u.csv"),
                                     "--per-class", "3", "--min-interval", "0", "--no-progress",
                                     "--api-base-url", openverse.base + "/v1/images/"])
    assert s["urls"] == 3 and s["sources"] == ["openverse"]
    with pytest.raises(SystemExit):
        run_script("search_images", ["--data-dir", str(train), "--output", str(tmp_path / "v.csv"),
                                     "--license", "gpl"])
    assert "--license 'gpl'" in capsys.readouterr().err


def test_attribution_through_merge_and_stats(tmp_path):
    """download manifest -> merge_data -> ATTRIBUTION.csv beside the merged split -> a stats line per licence."""
    from PIL import Image
    from test_download import picture

    from data_tools.download import MANIFEST_FIELDS
    from data_tools.merge import merge_data
    from data_tools.stats import dataset_stats
    from ws_dan.common.io import sha256_file, write_csv

    train = tmp_path / "data" / "train" / "cars"
    train.mkdir(parents=True)
    picture(1).save(train / "old.jpg")
    new = tmp_path / "downloads"
    (new / "cars").mkdir(parents=True)
    rows = []
    for k, lic in enumerate(["by-sa", "cc0", "by-sa"]):
        p = new / "cars" / f"{k:024x}.jpg"
        picture(10 + k).save(p)
        rows.append({"url": f"https://x/{k}.jpg", "class": "cars", "status": "ok", "path": f"cars/{p.name}",
                     "sha256": sha256_file(p), "license": lic, "creator": f"C{k}", "source": "openverse/flickr",
                     "landing_url": f"https://www.flickr.com/photos/a/{k}"})
    rows.append({"url": "https://x/failed.jpg", "class": "cars", "status": "failed", "license": "by"})
    write_csv(new / "download_manifest.csv", [{f: r.get(f, "") for f in MANIFEST_FIELDS} for r in rows],
              MANIFEST_FIELDS)
    out = tmp_path / "merged"
    s = merge_data(new, tmp_path / "data" / "train", out, workers=1)
    attribution = read_rows(out / "ATTRIBUTION.csv")
    assert s["added"] == 3 and len(attribution) == 3 and s["attribution"]["with_license"] == 3
    assert Counter(r["license"] for r in attribution) == {"by-sa": 2, "cc0": 1}
    assert all((out / "train" / r["path"]).is_file() and r["landing_url"] for r in attribution)
    assert not (tmp_path / "data" / "ATTRIBUTION.csv").exists()  # beside the merged split only
    stats = dataset_stats(out, tmp_path / "stats", workers=1)
    assert stats["images_per_license"] == {"by-sa": 2, "cc0": 1}
    # a copy renamed after the download is still found by its SHA-256; no manifest row: listed, empty licence
    extra = tmp_path / "elsewhere.jpg"
    Image.open(new / "cars" / f"{0:024x}.jpg").save(extra)
    res = write_attribution([{"source": str(extra), "dest": str(out / "train" / "cars" / "x.jpg"),
                              "class": "cars", "sha256": "0" * 64}], new, out / "train")
    assert res["images"] == 4 and res["per_license"]["unknown"] == 1
