"""search_images: against a local stand-in of the Custom Search JSON API on 127.0.0.1 (paging, errors, quota)."""

from __future__ import annotations

import csv
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from conftest import run_script

from data_tools.download import read_url_list
from data_tools.search import (
    MAX_RESULTS,
    QuotaExceeded,
    RateLimiter,
    SearchClient,
    SearchError,
    make_query,
    search_images,
)
from ws_dan.common.io import InputError

KEY, CX = "test-key-123", "engine-456"


class FakeSearchApi:
    """Serves the documented JSON of cse.list for ``searchType=image``.

    Each query has ``totals[query]`` results (default 37; the real API never serves past the 100th). Queries
    containing a trigger word misbehave: ``quota`` -> 403 dailyLimitExceeded; ``busy`` -> 429 once (Retry-After 0),
    then results; ``slowdown`` -> 403 rateLimitExceeded once; ``broken`` -> 500 once; ``badrequest`` -> 400.
    A wrong key gets 400 "API key not valid". Every request's parameters are recorded in ``requests``.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.totals: dict[str, int] = {}
        self.failures: Counter = Counter()
        self.malformed: dict = {}
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with api.lock:
                    api.requests.append(q)
                status, body, headers = api.answer(parts.path, q)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/customsearch/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def error(code: int, message: str, reason: str, status: str) -> tuple[int, object, dict]:
        return code, {"error": {"code": code, "message": message, "status": status,
                                "errors": [{"message": message, "domain": "global", "reason": reason}]}}, {}

    def once(self, key: str) -> bool:
        with self.lock:
            self.failures[key] += 1
            return self.failures[key] == 1

    def answer(self, path: str, q: dict) -> tuple[int, object, dict]:
        if path != "/customsearch/v1":
            return 404, {"error": {"code": 404, "message": "Not Found"}}, {}
        if q.get("key") != KEY:
            return self.error(400, "API key not valid. Please pass a valid API key.", "badRequest", "INVALID_ARGUMENT")
        query, start, num = q.get("q", ""), int(q.get("start", 1)), int(q.get("num", 10))
        if q.get("cx") != CX or q.get("searchType") != "image":
            return self.error(400, "Request contains an invalid argument.", "invalid", "INVALID_ARGUMENT")
        if not 1 <= num <= 10 or start + num - 1 > MAX_RESULTS:
            return self.error(400, "Request contains an invalid argument.", "invalid", "INVALID_ARGUMENT")
        if "quota" in query:
            return self.error(403, "This API requires billing to be enabled... Daily Limit Exceeded.",
                              "dailyLimitExceeded", "PERMISSION_DENIED")
        if "perday" in query:  # today's quota is spent: same 429 status as a per-minute limit
            return self.error(429, "Quota exceeded for quota metric 'Queries' and limit 'Queries per day' of "
                                   "service 'customsearch.googleapis.com'", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
        if "busy" in query and self.once(query):
            code, body, _ = self.error(429, "Quota exceeded for quota metric 'Queries' and limit 'Queries per "
                                            "minute'.", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
            return code, body, {"Retry-After": "0"}
        if "slowdown" in query and self.once(query):
            return self.error(403, "Rate Limit Exceeded", "rateLimitExceeded", "PERMISSION_DENIED")
        if "broken" in query and self.once(query):
            return self.error(500, "Backend Error", "backendError", "INTERNAL")
        if query in self.malformed:  # an answer that is JSON of the wrong shape, or not JSON at all
            return 200, self.malformed[query], {}
        if "redirftp" in query:
            return 302, b"", {"Location": "ftp://127.0.0.1/customsearch/v1"}
        if "redirhost" in query:  # the same server under another host name: must not be followed
            return 302, b"", {"Location": self.base_url.replace("127.0.0.1", "localhost") + "?" + urlencode(q)}
        if "badrequest" in query:
            return self.error(400, "Invalid value for imgType", "invalid", "INVALID_ARGUMENT")
        total = min(self.totals.get(query, 37), MAX_RESULTS)
        slug = query.replace(" ", "-")
        items = []
        for rank in range(start, min(start + num, total + 1)):
            # the API may list one image twice (from two pages); rank 5 repeats rank 4's link
            link = f"https://img.example.com/{slug}/{rank - (rank == 5)}.jpg"
            items.append({"kind": "customsearch#result", "title": f"{query} {rank}", "link": link,
                          "displayLink": "img.example.com", "mime": "image/jpeg",
                          "image": {"contextLink": f"https://example.com/{slug}/{rank}", "height": 480,
                                    "width": 640, "byteSize": 12345, "thumbnailLink": link + "?thumb"}})
        if query.endswith("ftp"):  # a link the downloader would refuse anyway
            items.insert(0, {"link": "ftp://example.com/x.jpg", "title": "ftp"})
        queries = {"request": [{"searchTerms": query, "count": len(items), "startIndex": start}]}
        if start + num <= total and start + num <= MAX_RESULTS:
            queries["nextPage"] = [{"searchTerms": query, "count": num, "startIndex": start + num}]
        return 200, {"kind": "customsearch#search", "queries": queries, "items": items,
                     "searchInformation": {"totalResults": str(total)}}, {}


@pytest.fixture
def api():
    fake = FakeSearchApi()
    yield fake
    fake.close()


@pytest.fixture
def classes(tmp_path):
    train = tmp_path / "data" / "train"
    for name in ("Acura TL Sedan 2012", "red_circle", "busy car", "broken car", "slowdown car"):
        (train / name).mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir()
    return train


def client(api, **kw) -> SearchClient:
    slept = []
    c = SearchClient(KEY, CX, base_url=api.base_url, min_interval=0, backoff=0.01, retries=3,
                     sleep=slept.append, **kw)
    c.slept = slept
    return c


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_paging_retries_and_output(api, classes, tmp_path):
    api.totals["Acura TL Sedan 2012 exterior"] = 250  # capped at 100 by the API
    api.totals["red circle exterior"] = 23
    out = tmp_path / "urls.csv"
    c = client(api)
    s = search_images(classes, out, c, per_class=100, template="{class} exterior")
    rows = read_rows(out)
    by_class = Counter(r["class"] for r in rows)
    # 100 results less the repeated link; 23 less one; 37 less one for the others
    assert by_class == {"Acura TL Sedan 2012": 99, "red_circle": 22, "busy car": 36, "broken car": 36,
                        "slowdown car": 36}
    assert s["urls"] == len(rows) and s["classes_complete"] == 5 and s["stopped"] is None
    acura = [r for r in api.requests if r.get("q") == "Acura TL Sedan 2012 exterior"]
    assert [int(r["start"]) for r in acura] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]
    assert all(int(r["num"]) <= 10 and r["searchType"] == "image" and r["safe"] == "active" for r in api.requests)
    assert all(int(r["start"]) + int(r["num"]) - 1 <= 100 for r in api.requests)
    # underscores read as spaces in the query; the class column keeps the folder name
    assert {r["query"] for r in rows if r["class"] == "red_circle"} == {"red circle exterior"}
    first = rows[0]
    assert first["url"].startswith("https://img.example.com/") and first["rank"] == "1"
    assert first["context_url"] and first["width"] == "640" and first["mime"] == "image/jpeg"
    # 429 (Retry-After: 0), 403 rateLimitExceeded and 500 were each retried once
    assert c.slept.count(0.0) == 1 and len(c.slept) == 3
    report = json.loads((tmp_path / "urls_report.json").read_text())
    assert report["classes"]["busy car"]["requests"] == 5 and report["classes"]["red_circle"]["requests"] == 3
    # the output is the downloader's input
    items = read_url_list(out)
    assert len(items) == len(rows) and items[0].label == "Acura TL Sedan 2012"
    # the key never lands in the outputs
    assert KEY not in out.read_text() and KEY not in (tmp_path / "urls_report.json").read_text()


def test_per_class_limit_pages_only_as_needed(api, classes, tmp_path):
    c = client(api)
    search_images(classes, tmp_path / "u.csv", c, per_class=15, classes=["red_circle"])
    assert [int(r["start"]) for r in api.requests] == [1, 11]
    assert len(read_rows(tmp_path / "u.csv")) == 15
    links = client(api).search("photo ftp", 5)
    assert len(links) == 5 and all(r["url"].startswith("https://") for r in links)


def test_quota_stops_the_run_and_resume_continues(api, tmp_path):
    train = tmp_path / "train"
    for name in ("a car", "b quota", "c car"):
        (train / name).mkdir(parents=True)
    out = tmp_path / "urls.csv"
    s = search_images(train, out, client(api))
    assert s["stopped"] and "dailyLimitExceeded" in s["stopped"]
    assert s["classes_complete"] == 1 and s["classes_left"] == ["b quota", "c car"]
    assert {r["class"] for r in read_rows(out)} == {"a car"}  # what was found is kept
    with pytest.raises(InputError, match="--resume"):
        search_images(train, out, client(api))
    (train / "b quota").rename(train / "b fine")  # "the next day": the quota is back
    api.requests.clear()
    s2 = search_images(train, out, client(api), resume=True)
    assert {r["q"] for r in api.requests} == {"b fine", "c car"}  # "a car" is not searched again
    assert s2["stopped"] is None and s2["classes_complete"] == 3
    assert Counter(r["class"] for r in read_rows(out)) == {"a car": 36, "b fine": 36, "c car": 36}


def test_refusals_are_clear_and_keep_the_key_secret(api, tmp_path):
    train = tmp_path / "train"
    (train / "x").mkdir(parents=True)
    bad_key = SearchClient("wrong-key-999", CX, base_url=api.base_url, min_interval=0, sleep=lambda s: None)
    with pytest.raises(SearchError, match="API key not valid") as e:
        search_images(train, tmp_path / "u.csv", bad_key)
    assert "wrong-key-999" not in str(e.value) and "check the API key" in str(e.value)
    with pytest.raises(SearchError, match="Invalid value for imgType"):
        client(api).search("badrequest", 10)
    with pytest.raises(QuotaExceeded):
        client(api).page("quota", 1, 10)
    c = client(api)
    with pytest.raises(QuotaExceeded, match="per day"):
        c.page("perday", 1, 10)
    assert c.requests == 1  # a spent daily quota is not retried
    # a server that keeps failing: retried, then a clear error
    c = client(api)
    c.retries = 0
    with pytest.raises(SearchError, match="HTTP 500"):
        c.page("broken again", 1, 10)
    with pytest.raises(SearchError, match="at most 100"):
        client(api).page("x", 95, 10)


def test_rate_limiter_spaces_requests():
    now = [0.0]
    waits = []

    def sleep(s):
        waits.append(round(s, 6))
        now[0] += s

    limiter = RateLimiter(1.5, clock=lambda: now[0], sleep=sleep)
    for t in (0.0, 0.2, 0.4, 5.0):
        now[0] = max(now[0], t)
        limiter.wait()
    assert waits == [1.3, 1.5]  # the 2nd and 3rd calls wait until 1.5 s after the previous one; the 4th is late


def test_queries_and_inputs():
    assert make_query("{class} exterior photo", "Acura_TL  Sedan") == "Acura TL Sedan exterior photo"
    with pytest.raises(InputError, match="{class}"):
        make_query("car photo", "x")


def test_script_reads_credentials_from_the_environment(api, classes, tmp_path, monkeypatch, capsys):
    out = tmp_path / "urls.csv"
    argv = ["--data-dir", str(classes.parent), "--output", str(out), "--per-class", "12", "--min-interval", "0",
            "--backoff", "0", "--source", "google", "--api-base-url", api.base_url, "--no-progress",
            "--classes", "red_circle"]
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_CSE_ID", raising=False)
    with pytest.raises(SystemExit) as e:
        run_script("search_images", argv)
    assert e.value.code == 2 and "GOOGLE_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_CSE_ID", CX)
    s = run_script("search_images", argv)  # a dataset root: its train/ class folders are used
    assert s["urls"] == 12 and len(read_rows(out)) == 12
    parser_flags = " ".join(a for action in __import__("search_images").get_args_parser()._actions
                            for a in action.option_strings)
    assert "key" not in parser_flags.replace("--query-template", "") and "--cx" not in parser_flags
    with pytest.raises(SystemExit):
        run_script("search_images", [*argv[:-2], "--classes", "no such class", "--overwrite"])
    assert "no such class" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an output inside the class folders is refused
        run_script("search_images", ["--data-dir", str(classes), "--output", str(classes / "red_circle" / "u.csv"),
                                     "--source", "google", "--api-base-url", api.base_url])
    assert "inside the dataset folder" in capsys.readouterr().err


def _page(items, start_index=11):
    return {"queries": {"nextPage": [{"startIndex": start_index}]}, "items": items}


MALFORMED = {
    "not json": b"<html>busy</html>",
    "truncated": b'{"items": [{"link": "https://x/1.jpg"',
    "top list": b'[{"link": "https://x/1.jpg"}]',
    "items string": json.dumps({"items": "none", "queries": {}}).encode(),
    "items number": json.dumps({"items": 3}).encode(),
    "item string": json.dumps({"items": ["https://x/1.jpg"]}).encode(),
    "queries list": json.dumps({"items": [{"link": "https://x/1.jpg"}], "queries": []}).encode(),
    "start text": json.dumps(_page([{"link": "https://x/1.jpg"}], "eleven")).encode(),
    "nextpage object": json.dumps({"items": [{"link": "https://x/1.jpg"}], "queries": {"nextPage": {}}}).encode(),
}


def test_malformed_answers_mark_the_class_incomplete(api, tmp_path):
    """Issue 12.12: malformed API JSON: one line, the class incomplete, the run goes on, never a traceback."""
    train = tmp_path / "train"
    for name in (*MALFORMED, "fine car"):
        (train / name).mkdir(parents=True)
    for name, body in MALFORMED.items():
        api.malformed[name] = body
    out = tmp_path / "urls.csv"
    s = search_images(train, out, client(api))
    assert s["classes_complete"] == 1 and set(s["classes_incomplete"]) == set(MALFORMED)
    for name, why in s["classes_incomplete"].items():
        assert "malformed response" in why and "\n" not in why, (name, why)
    assert "expected a list" in s["classes_incomplete"]["items string"]
    assert "startIndex" in s["classes_incomplete"]["start text"]
    assert {r["class"] for r in read_rows(out)} == {"fine car"}
    report = json.loads((tmp_path / "urls_report.json").read_text())
    assert report["classes"]["top list"]["complete"] is False and report["classes"]["fine car"]["complete"]
    # --resume searches the incomplete classes again, and only them
    api.malformed.clear()
    api.requests.clear()
    s2 = search_images(train, out, client(api), resume=True)
    assert {r["q"] for r in api.requests} == set(MALFORMED) and s2["classes_complete"] == len(MALFORMED) + 1


def test_redirects_stay_on_the_api_host_and_scheme(api, tmp_path):
    """Issue 12.11: API redirects were followed to ftp:// and to other hosts."""
    train = tmp_path / "train"
    for name in ("redirftp car", "redirhost car", "fine car"):
        (train / name).mkdir(parents=True)
    s = search_images(train, tmp_path / "u.csv", client(api))
    assert "non-http(s)" in s["classes_incomplete"]["redirftp car"]
    assert "redirect to another host" in s["classes_incomplete"]["redirhost car"]
    assert KEY not in json.dumps(s) and KEY not in (tmp_path / "u_report.json").read_text()
    # only the first request reached the server: the redirect to "localhost" (the same server under another
    # name, which the old client followed) was not requested, and a refused redirect is not retried
    assert sum(1 for r in api.requests if r.get("q") == "redirhost car") == 1
    assert s["classes_complete"] == 1


@pytest.mark.parametrize("corrupt", [b'{"classes": {"a car": {"complete": tr', b"\x00\xff\xfe binary",
                                     "caf\u00e9".encode("latin-1"), b'["a list"]', b'{"classes": ["a car"]}',
                                     b'{"classes": {"a car": "yes"}}'])
def test_resume_survives_a_corrupt_report(api, tmp_path, caplog, corrupt):
    """--resume with a report that cannot be read: one warning, and every class is searched again."""
    train = tmp_path / "train"
    for name in ("a car", "b car"):
        (train / name).mkdir(parents=True)
    out = tmp_path / "urls.csv"
    search_images(train, out, client(api))
    (tmp_path / "urls_report.json").write_bytes(corrupt)
    api.requests.clear()
    with caplog.at_level("WARNING"):
        s = search_images(train, out, client(api), resume=True)
    assert s["classes_complete"] == 2 and {r["q"] for r in api.requests} == {"a car", "b car"}
    assert Counter(r["class"] for r in read_rows(out)) == {"a car": 36, "b car": 36}  # no row twice
    if corrupt not in (b'{"classes": {"a car": "yes"}}',):
        assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1
