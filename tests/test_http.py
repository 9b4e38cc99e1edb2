"""data_tools.http: the one HTTP layer (policies, Retry-After, back-off, streaming caps, proxies, no stale reuse)."""

from __future__ import annotations

import io
import time

import pytest
from test_download import ImageServer, encode, picture

from data_tools.http import (
    Backoff,
    HttpClient,
    HttpError,
    check_url,
    parse_retry_after,
    same_host_policy,
    with_retries,
)
from data_tools.image_fetch import Fetcher


@pytest.fixture
def server():
    srv = ImageServer()
    yield srv
    srv.close()


def test_policies():
    for url, why in [("ftp://h/x", r"not an http\(s\) URL"), ("http://u:p@h/x", "credentials"),
                     ("http:///x", "no host"), ("http://h:0/x", "port 0"), ("http://h/x\r\nA: b", "control")]:
        with pytest.raises(HttpError, match=why):
            check_url(url)
    policy = same_host_policy("https://api.example.org/v1/images/")
    assert policy("https://api.example.org/v1/images/?page=2").hostname == "api.example.org"
    for url in ("https://evil.example.com/v1/images/", "http://api.example.org/v1/images/",
                "https://api.example.org:8443/v1/"):
        with pytest.raises(HttpError, match="redirect to another host"):
            policy(url + "?key=SECRET")
    with pytest.raises(HttpError) as e:
        policy("https://evil.example.com/x?key=SECRET")
    assert "SECRET" not in str(e.value)  # query strings (keys) never reach a message


def test_retry_after_and_backoff():
    assert parse_retry_after("7") == 7.0 and parse_retry_after("3600") == 60.0  # capped
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(1_000_030))
    assert parse_retry_after(date, now=lambda: 1_000_000.0) == pytest.approx(30.0)
    b = Backoff(2.0, cap=10.0, seed=1)
    assert 2.0 <= b.delay(0) <= 2.5 and 8.0 <= b.delay(2) <= 10.0 and b.delay(5) == 10.0
    assert b.delay(3, retry_after=0.0) == 0.0 and b.delay(0, retry_after=99) == 10.0
    calls, slept = [], []

    def flaky(n):
        calls.append(n)
        if n < 2:
            raise HttpError("HTTP 503", retryable=True, retry_after=0.5)
        return "done"

    assert with_retries(flaky, 3, b, sleep=slept.append) == "done" and slept == [0.5, 0.5]
    with pytest.raises(HttpError, match="404"):
        with_retries(lambda n: (_ for _ in ()).throw(HttpError("HTTP 404")), 3, b, sleep=slept.append)
    assert len(slept) == 2  # a final error is not retried


def test_a_refused_body_does_not_spoil_the_next_request(server):
    """Regression: a pooled connection reused after an early stop (size cap) failed the next request."""
    server.add("/f.jpg", encode(picture(6), "JPEG"))
    fetcher = Fetcher(timeout=1, max_bytes=100_000)
    outcomes = []
    for _ in range(15):
        for path in ("/huge", "/huge-chunked", "/lying-length", "/f.jpg"):
            try:
                fetcher.fetch(server.url(path), io.BytesIO())
                outcomes.append("ok")
            except HttpError as e:
                outcomes.append(e.reason.split(":")[0])
    assert set(outcomes) == {"ok", "too large"}, set(outcomes)


def test_redirect_checks_and_json(server):
    client = HttpClient(timeout=1, max_redirects=2)
    with client.open(server.url("/hop/2/x")) as resp:
        assert resp.status == 404 and resp.redirects == 2
    with pytest.raises(HttpError, match="too many redirects"):
        with client.open(server.url("/hop/3/x")):
            pass
    with pytest.raises(HttpError, match="non-http"):
        with client.open(server.url("/to-ftp")):
            pass
    server.add("/api", b'{"a": 1}', "application/json")
    r = client.get_json(server.url("/api"), {"q": "x y"})
    assert r.status == 200 and r.data == {"a": 1}
    server.add("/notjson", b"<html>", "text/html")
    assert client.get_json(server.url("/notjson")).data is None
    with pytest.raises(HttpError, match="too large"):
        client.get_json(server.url("/huge"), max_bytes=1000)


def test_proxies_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://user:pw@proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    client = HttpClient()
    from urllib.parse import urlsplit

    assert client._manager(urlsplit("http://images.example.com/a.jpg")) is not client._direct
    assert client._manager(urlsplit("http://127.0.0.1:8000/a.jpg")) is client._direct  # loopback: direct
    assert client._manager(urlsplit("http://internal.example/a.jpg")) is client._direct  # no_proxy
    assert HttpClient(use_env_proxy=False)._manager(urlsplit("http://images.example.com/")) is not None
    assert not HttpClient(use_env_proxy=False).proxies
