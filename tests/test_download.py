"""download_images: against a local HTTP server on 127.0.0.1 (no internet): formats, failures, limits, safety, resume.

``ImageServer`` and the picture helpers are also used by test_clean.py.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import ROOT, run_script
from PIL import Image, ImageDraw

from data_tools.download import (
    DownloadSettings,
    Fetcher,
    FetchError,
    download_images,
    read_url_list,
    safe_folder_name,
    url_file_name,
)
from ws_dan.common.io import InputError

# ---------------------------------------------------------------------------------------------------------------
# Pictures and a local server


def picture(seed: int, size=(96, 72)) -> Image.Image:
    """A textured colour picture, different for every seed (far apart for the duplicate finder)."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        d.rectangle([x0, y0, x0 + int(rng.integers(6, w // 2)), y0 + int(rng.integers(6, h // 2))],
                    fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def with_transparent_left_half(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    alpha = np.full((im.height, im.width), 255, np.uint8)
    alpha[:, : im.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


class ImageServer:
    """A threaded HTTP server on 127.0.0.1 (free port) serving ``files`` and a few misbehaving routes.

    ``files`` maps a path to ``(bytes, content type)``. Special routes: ``/slow/<path>`` answers after ``slow``
    seconds; ``/flaky/<path>`` answers 503 (Retry-After: 0) the first time; ``/hop/<n>/<path>`` redirects n times
    before serving; ``/loop-a`` <-> ``/loop-b``; ``/to-ftp``, ``/to-file``, ``/to-data`` redirect to other schemes;
    ``/huge`` declares and sends ``huge`` bytes; ``/huge-nolength`` sends them without Content-Length, closing the
    connection; ``/huge-chunked`` in chunked encoding; ``/lying-length`` declares 100 bytes but sends ``huge``;
    ``/html`` is a web page; ``/error/<code>`` answers that status. ``paths`` records every request, and
    ``max_active`` the most requests served at the same time.
    """

    def __init__(self, slow: float = 3.0, huge: int = 3_000_000, delay: float = 0.0):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.paths: list[str] = []
        self.hits: Counter = Counter()
        self.slow, self.huge, self.delay = slow, huge, delay
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                with owner.lock:
                    owner.paths.append(self.path)
                    owner.hits[self.path] += 1
                    owner.active += 1
                    owner.max_active = max(owner.max_active, owner.active)
                # Requests in progress are counted before any byte of the answer is sent: the client cannot have
                # moved on to its next request yet, so the count is exact.
                time.sleep(owner.delay)
                with owner.lock:
                    owner.active -= 1
                try:
                    owner.route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout, size cap): expected in these tests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes, ctype: str = "image/jpeg") -> str:
        self.files[path] = (data, ctype)
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routes
    @staticmethod
    def _send(h, status: int, body: bytes = b"", ctype: str = "text/plain", headers: Optional[dict] = None,
              length: Optional[int] = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _redirect(self, h, location: str, status: int = 302) -> None:
        self._send(h, status, b"", headers={"Location": location})

    def _stream(self, h, total: int, write: Callable[[bytes], None]) -> None:
        block = b"\xff\xd8\xff" + b"\0" * 65533
        sent = 0
        while sent < total:
            write(block[: min(len(block), total - sent)])
            sent += len(block)

    def route(self, h) -> None:
        path = unquote(h.path.split("?")[0])
        if path.startswith("/slow/"):
            time.sleep(self.slow)
            path = path[len("/slow"):]
        if path.startswith("/flaky/"):
            if self.hits[h.path] == 1:
                return self._send(h, 503, b"busy", headers={"Retry-After": "0"})
            path = path[len("/flaky"):]
        if path.startswith("/hop/"):
            _, _, n, rest = path.split("/", 3)
            nxt = f"/hop/{int(n) - 1}/{rest}" if int(n) > 1 else "/" + rest
            return self._redirect(h, nxt, 301 if int(n) % 2 else 307)
        if path in self.files:
            data, ctype = self.files[path]
            return self._send(h, 200, data, ctype)
        if path == "/loop-a":
            return self._redirect(h, "/loop-b")
        if path == "/loop-b":
            return self._redirect(h, self.url("/loop-a"))
        if path == "/to-ftp":
            return self._redirect(h, "ftp://127.0.0.1/picture.jpg")
        if path == "/to-file":
            return self._redirect(h, "file:///etc/passwd")
        if path == "/to-data":
            return self._redirect(h, "data:image/png;base64,iVBORw0KGgo=")
        if path == "/html":
            return self._send(h, 200, b"<!DOCTYPE html><html><body>Not found, but 200</body></html>", "text/html")
        if path.startswith("/error/"):
            return self._send(h, int(path.split("/")[2]), b"error")
        if path == "/huge":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(self.huge))
            h.end_headers()
            return self._stream(h, self.huge, h.wfile.write)
        if path == "/lying-length":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "100")
            h.end_headers()
            return self._stream(h, self.huge, h.wfile.write)
        if path == "/huge-nolength":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            return self._stream(h, self.huge, h.wfile.write)
        if path == "/huge-chunked":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()

            def chunk(b: bytes) -> None:
                h.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")

            self._stream(h, self.huge, chunk)
            h.wfile.write(b"0\r\n\r\n")
            return None
        return self._send(h, 404, b"not found")


@pytest.fixture
def server():
    srv = ImageServer()
    yield srv
    srv.close()


def write_csv_urls(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "class"])
        w.writerows(rows)
    return path


def manifest(out: Path) -> dict[str, dict]:
    with open(out / "download_manifest.csv", newline="", encoding="utf-8") as f:
        rows: dict[str, dict] = {}
        for r in csv.DictReader(f):
            rows.setdefault(r["url"], r)  # a URL listed for two classes: its first row
        return rows


FAST = DownloadSettings(workers=4, timeout=0.5, retries=0, backoff=0.01, max_bytes=1_000_000, min_side=16)


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_download_formats_failures_and_limits(server, tmp_path):
    good = {
        "/a.jpg": (encode(picture(1), "JPEG", quality=90), "image/jpeg"),
        "/b.png": (encode(with_transparent_left_half(picture(2)), "PNG"), "image/png"),
        "/c.webp": (encode(picture(3), "WEBP"), "image/webp"),
        "/d.gif": (encode(picture(4).convert("P"), "GIF"), "application/octet-stream"),
        "/e-png-labelled-text": (encode(picture(5), "PNG"), "text/plain"),
        "/Acura TL 2012/ünïcode name.jpg": (encode(picture(9), "JPEG"), "image/jpeg"),  # sent percent-encoded
    }
    for path, (data, ctype) in good.items():
        server.add(path, data, ctype)
    server.add("/f.jpg", encode(picture(6), "JPEG"))
    server.add("/tiny.png", encode(picture(7).resize((8, 8)), "PNG"), "image/png")
    server.add("/truncated.jpg", encode(picture(8), "JPEG")[:400], "image/jpeg")
    bad = {
        "/missing.jpg": "HTTP 404",
        "/error/500": "HTTP 500",
        "/slow/a.jpg": "timed out",
        "/html": "not an image",
        "/huge": "too large: Content-Length",
        "/huge-nolength": "too large: more than",
        "/huge-chunked": "too large: more than",
        "/lying-length": "",  # only the declared 100 bytes are read: not a decodable image
        "/loop-a": "redirect loop",
        "/hop/9/a.jpg": "too many redirects",
        "/to-ftp": "redirect to a non-http(s) URL",
        "/to-file": "redirect to a non-http(s) URL",
        "/to-data": "redirect to a non-http(s) URL",
        "/tiny.png": "too small",
        "/truncated.jpg": "",
    }
    rows = [(server.url(p), "cars") for p in good] + [(server.url(p), "cars") for p in bad]
    rows += [(server.url("/f.jpg"), "cars"),
             (server.url("/hop/3/f.jpg"), "redirected"),  # a short chain is followed (to a duplicate of f.jpg)
             (server.url("/a.jpg"), "other class"),  # one URL, two classes: the first one keeps it
             ("ftp://127.0.0.1/a.jpg", "cars"), ("file:///etc/passwd", "cars"), ("javascript:alert(1)", "cars"),
             ("http://user:secret@127.0.0.1/a.jpg", "cars"), ("http:///nohost.jpg", "cars"),
             (server.url("/a.jpg") + "\r\nX-Injected: 1", "cars")]  # a header-injection attempt
    urls = write_csv_urls(tmp_path / "urls.csv", rows)
    out = tmp_path / "out"
    start = time.perf_counter()
    s = download_images(urls, out, settings=FAST, hash_workers=1)
    assert time.perf_counter() - start < 10
    m = manifest(out)

    for path in good:
        r = m[server.url(path)]
        assert r["status"] == "ok", (path, r)
        saved = out / r["path"]
        assert saved.parent == out / "cars" and saved.name == url_file_name(server.url(path))
        with Image.open(saved) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (96, 72)
        assert int(r["width"]) == 96 and len(r["sha256"]) == 64
    # an upright RGB JPEG is kept byte for byte; other formats are re-encoded
    assert (out / m[server.url("/a.jpg")]["path"]).read_bytes() == good["/a.jpg"][0]
    assert "re-encoded from PNG" in m[server.url("/b.png")]["reason"]
    # transparency is composited on white, as ws_dan.common.images does everywhere
    with Image.open(out / m[server.url("/b.png")]["path"]) as im:
        arr = np.asarray(im, dtype=np.int16)
    assert arr[:, :40].min() >= 235 and arr[:, 56:].std() > 20  # white left half, the picture on the right
    for path, want in bad.items():
        r = m[server.url(path)]
        assert r["status"] in ("failed", "error") and r["path"] == "", (path, r)
        assert want in r["reason"], (path, r["reason"])
    assert m[server.url("/slow/a.jpg")]["status"] == "error"  # transient: a rerun tries again
    assert m[server.url("/missing.jpg")]["status"] == "failed"  # final
    # the redirected copy of f.jpg is a duplicate of the cars image (or the other way round)
    pair = {m[server.url("/hop/3/f.jpg")]["status"], m[server.url("/f.jpg")]["status"]}
    assert pair == {"ok", "duplicate"}
    for url in ("ftp://127.0.0.1/a.jpg", "file:///etc/passwd", "javascript:alert(1)"):
        assert m[url]["status"] == "failed" and "not an http(s) URL" in m[url]["reason"]
        assert m[url]["attempts"] == "0"  # refused without any network access
    assert "credentials" in m["http://user:secret@127.0.0.1/a.jpg"]["reason"]
    with open(out / "download_manifest.csv", newline="") as f:
        twice = [r for r in csv.DictReader(f) if r["url"] == server.url("/a.jpg")]
    assert [(r["class"], r["status"]) for r in twice] == [("cars", "ok"), ("other class", "skipped")]
    assert "already listed for class 'cars'" in twice[1]["reason"]
    assert "no host" in m["http:///nohost.jpg"]["reason"]
    assert "control characters" in m[server.url("/a.jpg") + "\r\nX-Injected: 1"]["reason"]
    # nothing but finished JPEGs and the reports; no temporary file left behind
    files = all_files(out)
    assert {p.name for p in files if p.parent == out} == {"download_manifest.csv", "download_report.json"}
    assert all(p.suffix == ".jpg" and not p.name.startswith(".") for p in files if p.parent != out)
    assert s["ok"] == len(good) + 1 and s["new_images"] == len(good) + 1
    assert s["failure_reasons"]["too large"] == 3


def test_limits_hold_on_every_hop(server, tmp_path):
    """A redirect to a huge file is capped like a direct one; the huge body is not read past the cap."""
    server.huge = 5_000_000
    fetcher = Fetcher(timeout=1, max_bytes=200_000, max_redirects=3)
    sink = io.BytesIO()
    with pytest.raises(FetchError, match="too large: more than 200000"):
        fetcher.fetch(server.url("/hop/2/huge-chunked"), sink)
    assert len(sink.getvalue()) <= 200_000
    with pytest.raises(FetchError, match="too many redirects"):
        fetcher.fetch(server.url("/hop/4/huge"), io.BytesIO())
    with pytest.raises(FetchError, match="Content-Length 5000000"):
        fetcher.fetch(server.url("/hop/3/huge"), io.BytesIO())


def test_path_traversal_cannot_escape_the_target(server, tmp_path):
    data = encode(picture(11), "JPEG")
    server.add("/x.jpg", data)
    server.add("/etc/passwd", encode(picture(12), "JPEG"))
    rows = [
        (server.url("/a/../../../../etc/passwd"), "cars"),  # the URL's path tries to climb
        (server.url("/..%2f..%2f..%2fx.jpg"), "cars"),
        (server.url("/x.jpg"), "../../escaped"),  # so does the class name
        (server.url("/x.jpg?copy=2"), "/abs/olute"),
        (server.url("/x.jpg?copy=3"), ".hidden"),
        (server.url("/x.jpg?copy=4"), "..\\..\\win"),
    ]
    urls = write_csv_urls(tmp_path / "urls.csv", rows)
    out = tmp_path / "sub" / "out"
    download_images(urls, out, settings=DownloadSettings(workers=2, timeout=1, retries=0, dedupe=False),
                    hash_workers=1)
    # nothing outside the target folder; every saved file directly inside a class folder of it
    assert all_files(tmp_path / "sub") == all_files(out)
    assert {p.name for p in tmp_path.iterdir()} == {"urls.csv", "sub"}
    m = manifest(out)
    folders = {r["class"]: Path(r["path"]).parent.as_posix() for r in m.values() if r["status"] == "ok"}
    assert folders["../../escaped"] == "____escaped"
    assert folders["/abs/olute"] == "_abs_olute"
    assert folders[".hidden"] == "hidden"
    assert folders["..\\..\\win"] == "____win"
    for r in m.values():
        if r["path"]:
            resolved = (out / r["path"]).resolve()
            assert out.resolve() in resolved.parents and resolved.parent.parent == out.resolve()
            assert "passwd" not in r["path"] and ".." not in r["path"]


@pytest.mark.parametrize("name,folder", [("Acura TL Sedan 2012", "Acura TL Sedan 2012"), ("a/b", "a_b"),
                                         ("../..", "___"), ("..", "_"), (" .x. ", "x"), ("a\x00b\nc", "a_b_c"),
                                         ("...hidden", "_.hidden")])
def test_safe_folder_name(name, folder):
    assert safe_folder_name(name) == folder
    assert "/" not in folder and "\\" not in folder and ".." not in folder and not folder.startswith(".")


@pytest.mark.parametrize("name", ["", "  ", ".", " . "])
def test_unusable_class_names_are_refused(name):
    with pytest.raises(InputError):
        safe_folder_name(name)


def test_url_list_formats(tmp_path):
    (tmp_path / "a.txt").write_text("http://h/1.jpg Acura TL Sedan 2012\nAcura RL\thttp://h/2.jpg\n"
                                    "# comment\n\nhttp://h/3.jpg\n")
    items = read_url_list(tmp_path / "a.txt", default_class="other")
    assert [(i.url, i.label) for i in items] == [("http://h/1.jpg", "Acura TL Sedan 2012"),
                                                 ("http://h/2.jpg", "Acura RL"), ("http://h/3.jpg", "other")]
    with pytest.raises(InputError, match=r"a.txt:5: no class"):
        read_url_list(tmp_path / "a.txt")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "red car.txt").write_text("http://h/r1.jpg\nhttp://h/r2.jpg\n")
    (lists / "blue.txt").write_text("http://h/b1.jpg\n")
    (lists / "notes.md").write_text("ignored")
    assert [(i.label, i.url) for i in read_url_list(lists)] == [
        ("blue", "http://h/b1.jpg"), ("red car", "http://h/r1.jpg"), ("red car", "http://h/r2.jpg")]
    (tmp_path / "s.csv").write_text("link,title,label\nhttp://h/1.jpg,x,cat\nhttp://h/2.jpg,y,dog\n")
    assert [(i.url, i.label) for i in read_url_list(tmp_path / "s.csv")] == [("http://h/1.jpg", "cat"),
                                                                            ("http://h/2.jpg", "dog")]
    (tmp_path / "bad.csv").write_text("url,title\nhttp://h/1.jpg,x\n")
    with pytest.raises(InputError, match="no class column"):
        read_url_list(tmp_path / "bad.csv")
    (tmp_path / "clash.csv").write_text("url,class\nhttp://h/1.jpg,a/b\nhttp://h/2.jpg,a_b\n")
    with pytest.raises(InputError, match="would share the folder 'a_b'"):
        read_url_list(tmp_path / "clash.csv")
    with pytest.raises(InputError, match="does not exist"):
        read_url_list(tmp_path / "nope.csv")


def test_resume_skips_done_urls_and_retries_transient_failures(server, tmp_path):
    for k in range(4):
        server.add(f"/{k}.jpg", encode(picture(20 + k), "JPEG"))
    server.add("/late.jpg", encode(picture(30), "JPEG"))
    rows = [(server.url(f"/{k}.jpg"), "cars") for k in range(4)]
    rows += [(server.url("/missing.jpg"), "cars"), (server.url("/slow/late.jpg"), "cars")]
    urls = write_csv_urls(tmp_path / "urls.csv", rows)
    out = tmp_path / "out"
    first = download_images(urls, out, settings=FAST, hash_workers=1)
    assert (first["ok"], first["failed"], first["error"]) == (4, 1, 1)
    mtimes = {p: p.stat().st_mtime_ns for p in all_files(out / "cars")}
    server.paths.clear()
    server.slow = 0.0  # the slow server recovered
    again = download_images(urls, out, settings=FAST, hash_workers=1)
    # only the transient failure is tried again; done URLs and final failures are not requested
    assert server.paths == ["/slow/late.jpg"]
    assert (again["carried_over"], again["attempted"], again["ok"], again["new_images"]) == (5, 1, 5, 1)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert manifest(out)[server.url("/missing.jpg")]["status"] == "failed"
    # an interrupted run: the journal holds what was done, the manifest is missing
    os.replace(out / "download_manifest.csv", out / ".download_journal.csv")
    server.paths.clear()
    third = download_images(urls, out, settings=FAST, hash_workers=1)
    assert server.paths == [] and third["ok"] == 5 and not (out / ".download_journal.csv").exists()
    # a file on disk that no list recorded (killed between save and journal) is not fetched again
    (out / "download_manifest.csv").unlink()
    server.paths.clear()
    fourth = download_images(urls, out, settings=FAST, hash_workers=1)
    assert server.paths == ["/missing.jpg"] and fourth["ok"] == 5
    # a folder that is not an earlier download is refused without --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        download_images(urls, other, settings=FAST)


def test_duplicates_of_target_reference_and_run_are_skipped(server, tmp_path):
    ref = tmp_path / "train" / "cars"
    ref.mkdir(parents=True)
    picture(40).save(ref / "known.jpg", quality=95)
    server.add("/known-smaller.jpg", encode(picture(40).resize((80, 60)), "JPEG", quality=70))  # near copy
    server.add("/new.jpg", encode(picture(41), "JPEG"))
    server.add("/new-again.png", encode(picture(41), "PNG"))  # same picture, other URL and format
    server.add("/other.jpg", encode(picture(42), "JPEG"))
    rows = [(server.url(p), "cars") for p in ("/known-smaller.jpg", "/new.jpg", "/new-again.png", "/other.jpg")]
    urls = write_csv_urls(tmp_path / "urls.csv", rows)
    out = tmp_path / "out"
    s = download_images(urls, out, reference=[tmp_path / "train"], settings=FAST, hash_workers=1)
    m = manifest(out)
    assert m[server.url("/known-smaller.jpg")]["status"] == "duplicate"
    assert str(ref / "known.jpg") in m[server.url("/known-smaller.jpg")]["reason"]
    assert sorted(m[server.url(p)]["status"] for p in ("/new.jpg", "/new-again.png")) == ["duplicate", "ok"]
    assert (s["ok"], s["duplicate"]) == (2, 2)
    assert len(list((out / "cars").iterdir())) == 2
    # images already in the target count too: a new list with another copy of other.jpg adds nothing
    server.add("/other-copy.webp", encode(picture(42), "WEBP", quality=90))
    urls2 = write_csv_urls(tmp_path / "urls2.csv", [(server.url("/other-copy.webp"), "more")])
    s2 = download_images(urls2, out, settings=FAST, hash_workers=1)
    assert s2["duplicate"] == 1 and s2["new_images"] == 0
    assert not (out / "more").exists() or not any((out / "more").iterdir())
    # the reference folder is only read
    assert [p.name for p in ref.iterdir()] == ["known.jpg"]


def test_per_host_limit_max_per_class_and_retries(tmp_path):
    srv = ImageServer(delay=0.05)
    try:
        for k in range(12):
            srv.add(f"/{k}.jpg", encode(picture(50 + k), "JPEG"))
        rows = [(srv.url(f"/{k}.jpg"), "a" if k < 8 else "b") for k in range(12)]
        rows.append((srv.url("/flaky/0.jpg"), "c"))
        urls = write_csv_urls(tmp_path / "urls.csv", rows)
        settings = DownloadSettings(workers=8, timeout=2, retries=2, backoff=0.01, max_per_host=2, max_per_class=3,
                                    dedupe=False, min_side=16)
        s = download_images(urls, tmp_path / "out", settings=settings, hash_workers=1)
        assert 1 <= srv.max_active <= 2  # 8 threads, but never more than 2 requests at once to one host
        m = manifest(tmp_path / "out")
        assert s["per_class"]["a"]["ok"] == 3 and s["per_class"]["a"]["skipped"] == 5
        assert s["per_class"]["b"]["ok"] == 3 and s["per_class"]["b"]["skipped"] == 1
        assert len(list((tmp_path / "out" / "a").iterdir())) == 3
        assert all("--max-per-class" in r["reason"] for r in m.values() if r["status"] == "skipped")
        flaky = m[srv.url("/flaky/0.jpg")]
        assert flaky["status"] == "ok" and flaky["attempts"] == "2"  # 503 + Retry-After, then served
    finally:
        srv.close()


def test_script_end_to_end_with_text_list(server, tmp_path, capsys):
    server.add("/a.png", encode(picture(60), "PNG"), "image/png")
    server.add("/b.jpg", encode(picture(61), "JPEG"))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "red_circle.txt").write_text(f"{server.url('/a.png')}\n{server.url('/b.jpg')}\n{server.url('/404')}\n")
    out = tmp_path / "out"
    s = run_script("download_images", ["--urls", str(lists), "--output-dir", str(out), "--timeout", "1",
                                       "--retries", "0", "--no-progress", "-j", "1"])
    assert (s["ok"], s["failed"]) == (2, 1)
    printed = capsys.readouterr().out
    assert "HTTP 404 Not Found" in printed and "red_circle" in printed
    with pytest.raises(SystemExit) as e:
        run_script("download_images", ["--urls", str(tmp_path / "nope.csv"), "--output-dir", str(tmp_path / "o2")])
    assert e.value.code == 2
    assert "nope.csv" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["download_images", "search_images", "train_cleaner", "clean_images"])
def test_help_runs(name):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "(default:" in out.stdout


def test_symlinked_class_folder_is_refused_and_nothing_lands_outside(server, tmp_path, caplog):
    """Issue 12.7: an image was written through a symlinked class folder to a place outside --output-dir."""
    server.add("/a.jpg", encode(picture(70), "JPEG"))
    server.add("/b.jpg", encode(picture(71), "JPEG"))
    server.add("/c.jpg", encode(picture(72), "JPEG"))
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (out / "cars").symlink_to(outside, target_is_directory=True)
    urls = write_csv_urls(tmp_path / "urls.csv", [(server.url("/a.jpg"), "cars"), (server.url("/b.jpg"), "cars"),
                                                  (server.url("/c.jpg"), "trucks")])
    with caplog.at_level("WARNING"):
        s = download_images(urls, out, settings=FAST, hash_workers=1, overwrite=True)
    assert list(outside.iterdir()) == []  # nothing written through the link
    m = manifest(out)
    for path in ("/a.jpg", "/b.jpg"):
        assert m[server.url(path)]["status"] == "failed"
        assert "class folder 'cars' is a symbolic link" in m[server.url(path)]["reason"]
        assert m[server.url(path)]["attempts"] == "0"  # refused before any request
    assert m[server.url("/c.jpg")]["status"] == "ok"
    assert list(s["refused_classes"]) == ["cars"]
    assert sum("symbolic link" in r.getMessage() for r in caplog.records) == 1  # one line per class
    # a symlinked journal is refused too: appending would follow it
    (out / ".download_journal.csv").symlink_to(outside / "journal.csv")
    with pytest.raises(InputError, match="symbolic link"):
        download_images(urls, out, settings=FAST, hash_workers=1)
    assert list(outside.iterdir()) == []


def test_manifest_keeps_the_licence_columns(server, tmp_path):
    server.add("/a.jpg", encode(picture(80), "JPEG"))
    urls = tmp_path / "urls.csv"
    with open(urls, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "class", "query", "rank", "source", "license", "license_version", "license_url",
                    "creator", "attribution", "landing_url"])
        w.writerow([server.url("/a.jpg"), "cars", "cars", 1, "openverse/flickr", "by-sa", "2.0",
                    "https://creativecommons.org/licenses/by-sa/2.0/", "Jane Doe", '"A car" by Jane Doe, CC BY-SA 2.0',
                    "https://www.flickr.com/photos/jane/123"])
        w.writerow([server.url("/missing.jpg"), "cars", "cars", 2, "commons", "cc0", "", "", "", "", ""])
    out = tmp_path / "out"
    download_images(urls, out, settings=FAST, hash_workers=1)
    m = manifest(out)
    ok = m[server.url("/a.jpg")]
    assert ok["status"] == "ok" and ok["license"] == "by-sa" and ok["creator"] == "Jane Doe"
    assert ok["landing_url"] == "https://www.flickr.com/photos/jane/123" and ok["source"] == "openverse/flickr"
    assert m[server.url("/missing.jpg")]["license"] == "cc0"  # failed rows keep them too
    # a rerun carries the rows (and their columns) over
    download_images(urls, out, settings=FAST, hash_workers=1)
    assert manifest(out)[server.url("/a.jpg")]["attribution"].startswith('"A car"')
