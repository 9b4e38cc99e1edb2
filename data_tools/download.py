"""Download images from lists of URLs into class folders: concurrent, bounded, resumable, never outside the target.

Input (:func:`read_url_list`): a CSV with a URL column and a class column (``url,class``: what
``scripts/search_images.py`` writes, or any image-search export), a text file (``URL CLASS`` or ``CLASS<TAB>URL``
per line), or a folder holding one ``<class>.txt`` file of URLs per class.

What a download must get through before a file appears in ``OUT/<class>/``:

* **The URL**: http or https only (``file://``, ``ftp://``, ``data:`` ... are refused without any network
  access); no ``user:password@``.
* **The transfer** (:class:`Fetcher`, ``http.client`` driven by hand so that every limit holds on every hop):
  a timeout on the connection and on every read, a total time limit per attempt, a size cap checked against
  ``Content-Length`` *and* counted while streaming (a missing or lying header changes nothing), redirects followed
  only to http(s) URLs, at most ``max_redirects`` of them, loops detected; at most ``max_per_host`` requests to
  one host at a time. Timeouts, connection errors, 429 and 5xx are retried with exponential back-off (or the
  server's ``Retry-After``); other failures are final.
* **The content**: the bytes must decode as an image (any format PIL reads; an HTML page does not), through
  ``ws_dan.images.open_image`` (EXIF orientation, RGB, decompression-bomb limit, truncation), and be at least
  ``min_side`` pixels on the short side. Upright RGB JPEGs are kept byte for byte; everything else is re-encoded
  to an RGB JPEG.
* **Duplicates**: an image whose pixels or perceptual hashes (``data_tools.dedupe``, same distance and default
  threshold) match an image already in the target folder, in a ``reference`` folder (the training and test
  splits) or downloaded earlier in the run is not saved.
* **Names**: the file name is a hash of the URL (``<sha256[:24]>.jpg``), never taken from the URL, and the class
  folder name is the class name with path separators, control characters, ``..`` and leading dots removed
  (:func:`safe_folder_name`), so nothing can be written outside the target folder.

Every URL gets a row in ``download_manifest.csv`` (url, class, status, reason, path, sha256, ...). Rows are also
appended to a journal as they complete, so an interrupted run loses nothing; running the same command again
skips the URLs already downloaded (and the final failures) and retries the transient ones.

The library never prints; ``scripts/download_images.py`` is the command-line front end.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import io
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
import unicodedata
import urllib.request
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import numpy as np

from data_tools.common import (
    DataToolError, Progress, finish_output_dir, prepare_output_dir, save_image, scan_dataset, sha256_file, track,
)
from ws_dan.images import sniff_bytes

LOG = logging.getLogger("ws_dan.data_tools.download")

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Responses worth another attempt: the server is busy or failing now, not refusing this URL for good.
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)

DEFAULT_WORKERS = 8
DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_MAX_PER_HOST = 2
#: Decompression-bomb limit for downloads: larger than any camera photo (a 50 MP phone image is 52M pixels) but
#: well below images.py's 256M default, because up to ``workers`` images are decoded at the same time.
DEFAULT_MAX_PIXELS = 100 * 1024 * 1024
DEFAULT_MIN_SIDE = 32
DEFAULT_QUALITY = 95
#: Longest wait honoured from a Retry-After header, so one server cannot park a worker for an hour.
MAX_RETRY_AFTER = 60.0
USER_AGENT = "ws-dan-toolkit-image-downloader/0.1 (+https://github.com/; research dataset curation)"

MANIFEST_NAME = "download_manifest.csv"
JOURNAL_NAME = ".download_journal.csv"
REPORT_NAME = "download_report.json"
MANIFEST_FIELDS = ("url", "class", "status", "reason", "path", "sha256", "final_url", "bytes", "width", "height",
                   "attempts")
#: ok: saved (now or by an earlier run); duplicate: decoded but already present; skipped: not attempted
#: (class full, URL listed twice); failed: final (404, not an image, too large, bad URL...); error: transient
#: (timeout, connection, 5xx), retried by the next run.
STATUSES = ("ok", "duplicate", "skipped", "failed", "error")
#: Statuses a rerun does not try again (unless ``retry_failed``).
FINAL_STATUSES = ("ok", "duplicate", "failed")

URL_COLUMNS = ("url", "link", "image_url", "imageurl", "image", "src")
CLASS_COLUMNS = ("class", "label", "class_name", "category")


# ---------------------------------------------------------------------------------------------------------------
# Input: URL lists and class names


@dataclass(frozen=True)
class UrlItem:
    """One URL to fetch for one class; ``folder`` is the sanitised class folder name, ``source`` file:line."""

    url: str
    label: str
    folder: str
    source: str = ""


_SEPARATORS = re.compile(r"[\x00-\x1f\x7f/\\]")
_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_FOLDER_BYTES = 150


def safe_folder_name(name: str) -> str:
    """A class name made safe as one folder name: it cannot point outside the folder that holds it.

    Path separators and control characters become ``_``, every ``..`` becomes ``_``, leading and trailing dots and
    spaces go (a leading dot would also hide the folder from every scan); on Windows the characters it forbids
    and its reserved device names are escaped too. Very long names are shortened with a hash suffix. Raises
    :class:`DataToolError` when nothing usable is left.
    """
    text = unicodedata.normalize("NFC", str(name)).strip()
    text = _SEPARATORS.sub("_", text)
    if os.name == "nt":  # legal on POSIX, where existing class folders may well use them: keep them there
        text = _WINDOWS_UNSAFE.sub("_", text)
    while ".." in text:
        text = text.replace("..", "_")
    text = text.strip(". ")
    if not text:
        raise DataToolError(f"class name {name!r}: nothing is left for a folder name once path separators and "
                            f"dots are removed; give the class a name with letters or digits")
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > _MAX_FOLDER_BYTES:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        text = text.encode("utf-8")[:_MAX_FOLDER_BYTES - 9].decode("utf-8", "ignore").rstrip(". ") + "_" + digest
    return text


def url_file_name(url: str) -> str:
    """The file name an image downloaded from ``url`` gets: derived from the URL's hash, never from its path."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:24] + ".jpg"


def _split_line(line: str) -> tuple[str, str]:
    # "CLASS<TAB>URL" or "URL<TAB>CLASS" (the field with "://" is the URL); otherwise "URL CLASS WITH SPACES".
    if "\t" in line:
        a, b = (s.strip() for s in line.split("\t", 1))
        return (b, a) if "://" in b and "://" not in a else (a, b)
    url, _, label = line.partition(" ")
    return url.strip(), label.strip()


def _find_column(header: Sequence[str], names: Sequence[str]) -> Optional[int]:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def read_url_list(path, default_class: Optional[str] = None) -> list[UrlItem]:
    """Read the URLs to fetch and their classes from a CSV, a text file, or a folder of ``<class>.txt`` files.

    * CSV: a header naming a URL column (``url``, ``link``, ``image_url``...) and a class column (``class``,
      ``label``, ``category``...); comma- or tab-separated.
    * Text: one URL per line, ``URL CLASS`` (the class may contain spaces), ``CLASS<TAB>URL`` or ``URL`` alone
      (then ``default_class``); empty lines and lines starting with ``#`` are ignored.
    * Folder: every ``<class>.txt`` in it (not recursive), one URL per line.

    Raises :class:`DataToolError` naming the file (and line) for a missing input, a CSV without the columns, a
    line without a class, or no URL at all. The URLs are not checked here (a bad one becomes a failed row).
    """
    path = Path(path)
    items: list[UrlItem] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt"
                       and not p.name.startswith("."))
        if not files:
            raise DataToolError(f"{path}: expected a folder with one <class>.txt file of URLs per class; found no "
                                f".txt file")
        for f in files:
            for n, line in enumerate(_read_text(f).splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    items.append(_item(line, f.stem, f"{f}:{n}"))
    elif path.is_file():
        text = _read_text(path)
        lines = text.splitlines()
        first = next((ln for ln in lines if ln.strip()), "")
        delimiter = "\t" if "\t" in first and "," not in first else ","
        header = next(csv.reader([first], delimiter=delimiter)) if first else []
        url_col = _find_column(header, URL_COLUMNS)
        if url_col is not None and "://" not in first:
            class_col = _find_column(header, CLASS_COLUMNS)
            if class_col is None and default_class is None:
                raise DataToolError(f"{path}: CSV has a URL column but no class column (expected one of "
                                    f"{', '.join(CLASS_COLUMNS)}; found {', '.join(header)})")
            reader = csv.reader(io.StringIO(text.lstrip("\r\n")), delimiter=delimiter)  # quoted newlines stay
            next(reader)
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                url = row[url_col].strip() if url_col < len(row) else ""
                label = row[class_col].strip() if class_col is not None and class_col < len(row) else ""
                items.append(_item(url, label or default_class, f"{path}:{reader.line_num}"))
        else:
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                url, label = _split_line(line)
                items.append(_item(url, label or default_class, f"{path}:{n}"))
    else:
        raise DataToolError(f"{path}: expected a CSV or text file of image URLs, or a folder of <class>.txt files; "
                            f"found {'nothing (the path does not exist)' if not path.exists() else 'something else'}")
    if not items:
        raise DataToolError(f"{path}: no URLs found")
    _check_folder_collisions(items)
    return items


def _read_text(path: Path) -> str:
    # Bytes decoded by hand: read_text's newline translation would alter newlines inside quoted CSV fields.
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataToolError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _item(url: str, label: Optional[str], source: str) -> UrlItem:
    if not label:
        raise DataToolError(f"{source}: no class for {url!r} (expected 'URL CLASS', a class column, or a "
                            f"<class>.txt file name)")
    try:
        folder = safe_folder_name(label)
    except DataToolError as e:
        raise DataToolError(f"{source}: {e}") from None
    if folder.lower() in (MANIFEST_NAME, REPORT_NAME):  # the reports live beside the class folders
        folder += "_"
    return UrlItem(url, label, folder, source)


def _check_folder_collisions(items: Sequence[UrlItem]) -> None:
    # Two different class names must not end up in one folder (also not on a case-insensitive filesystem).
    owner: dict[str, str] = {}
    for it in items:
        other = owner.setdefault(it.folder.lower(), it.label)
        if other != it.label:
            raise DataToolError(f"{it.source}: classes {other!r} and {it.label!r} would share the folder "
                                f"{it.folder!r}; rename one of them")
    renamed = sorted({(it.label, it.folder) for it in items if it.label != it.folder})
    for label, folder in renamed[:10]:
        LOG.warning("class %r is saved in the folder %r", label, folder)


# ---------------------------------------------------------------------------------------------------------------
# Fetching one URL


class FetchError(Exception):
    """A download that did not succeed; ``retryable`` when another attempt may (timeouts, 5xx, 429)."""

    def __init__(self, reason: str, retryable: bool = False, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class FetchInfo:
    """What a successful fetch wrote to the sink."""

    final_url: str
    bytes: int
    content_type: str
    redirects: int


def check_url(url: str) -> SplitResult:
    """Parse ``url`` and refuse anything but a plain http(s) URL with a host (raises a final :class:`FetchError`)."""
    # Spaces are tolerated (user lists hold them; they are sent percent-encoded, as browsers do); control
    # characters would let a URL inject header lines.
    if not url or url != url.strip() or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise FetchError(f"malformed URL {url[:80]!r} (empty, or with control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise FetchError(f"malformed URL ({e})") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise FetchError(f"not an http(s) URL (scheme {parts.scheme.lower() or 'missing'!r}); only http and https "
                         f"are fetched")
    if not parts.hostname:
        raise FetchError("malformed URL (no host)")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URL carries credentials (user:password@host); not supported")
    if port == 0:
        raise FetchError("malformed URL (port 0)")
    return parts


def _request_target(parts: SplitResult) -> str:
    # http.client sends the request line as ASCII and splits it on spaces: percent-encode spaces and non-ASCII.
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe="/?&=%:@!$'()*+,;~-._[]#")


def _retry_after(value: Optional[str]) -> Optional[float]:
    if value and value.strip().isdigit():
        return min(float(value.strip()), MAX_RETRY_AFTER)
    return None  # an HTTP-date or nothing: use our own back-off


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class Fetcher:
    """Fetches URLs over ``http.client`` with every limit applied to every hop; thread-safe.

    ``timeout`` bounds connecting and each read; ``total_timeout`` one attempt, redirects included. The body is
    streamed to a sink and counted, so ``max_bytes`` holds whatever ``Content-Length`` says (or does not say).
    ``max_per_host`` caps simultaneous requests per host. Proxies come from the usual ``http_proxy`` /
    ``https_proxy`` / ``no_proxy`` variables when ``use_env_proxy``; loopback hosts never use one.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, total_timeout: Optional[float] = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_redirects: int = DEFAULT_MAX_REDIRECTS,
                 max_per_host: int = DEFAULT_MAX_PER_HOST, user_agent: str = USER_AGENT,
                 use_env_proxy: bool = True, ssl_context: Optional[ssl.SSLContext] = None):
        if timeout <= 0 or max_bytes <= 0 or max_redirects < 0 or max_per_host < 1:
            raise DataToolError("timeout and max_bytes must be positive, max_redirects >= 0, max_per_host >= 1")
        self.timeout = float(timeout)
        self.total_timeout = float(total_timeout) if total_timeout else 4 * self.timeout
        self.max_bytes = int(max_bytes)
        self.max_redirects = int(max_redirects)
        self.max_per_host = int(max_per_host)
        self.user_agent = user_agent
        self.proxies = urllib.request.getproxies() if use_env_proxy else {}
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _host_slot(self, parts: SplitResult) -> Iterator[None]:
        key = f"{parts.hostname.lower()}:{parts.port or ''}"
        with self._lock:
            sem = self._hosts.setdefault(key, threading.BoundedSemaphore(self.max_per_host))
        with sem:
            yield

    def _proxy_for(self, parts: SplitResult) -> Optional[SplitResult]:
        proxy = self.proxies.get(parts.scheme.lower())
        host = parts.hostname.lower()
        if not proxy or host in _LOOPBACK or host.startswith("127.") or urllib.request.proxy_bypass(host):
            return None
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        return p if p.hostname else None

    def _connect(self, parts: SplitResult) -> tuple[http.client.HTTPConnection, str, dict]:
        """A connection for ``parts`` (through a proxy when configured), the request target and extra headers."""
        https = parts.scheme.lower() == "https"
        proxy = self._proxy_for(parts)
        headers: dict[str, str] = {}
        target = _request_target(parts)
        if proxy is None:
            if https:
                return (http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout,
                                                    context=self.ssl_context), target, headers)
            return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout), target, headers
        if proxy.username:
            token = base64.b64encode(f"{proxy.username}:{proxy.password or ''}".encode()).decode()
            headers["Proxy-Authorization"] = f"Basic {token}"
        if https:  # CONNECT tunnel through the proxy, TLS to the real host
            conn = http.client.HTTPSConnection(proxy.hostname, proxy.port or 8080, timeout=self.timeout,
                                               context=self.ssl_context)
            conn.set_tunnel(parts.hostname, parts.port or 443, headers=dict(headers))
            return conn, target, {}
        conn = http.client.HTTPConnection(proxy.hostname, proxy.port or 8080, timeout=self.timeout)
        return conn, f"{parts.scheme}://{parts.netloc}{target}", headers  # a plain-http proxy takes the whole URL

    def fetch(self, url: str, sink: BinaryIO, cancel: Optional[threading.Event] = None) -> FetchInfo:
        """GET ``url`` (following redirects within the limits) and write the body to ``sink``.

        Raises :class:`FetchError`; nothing is written to ``sink`` for a redirect or an error status (a transfer
        that fails half-way leaves a partial body: the caller discards the sink). Setting ``cancel`` stops a
        transfer between two reads (Ctrl-C need not wait for a large file to finish).
        """
        deadline = time.monotonic() + self.total_timeout
        current = url
        seen = {url}
        for hop in range(self.max_redirects + 1):
            parts = check_url(current)
            with self._host_slot(parts):
                status, location, info = self._get(current, parts, sink, deadline, cancel)
            if status is None:
                assert info is not None
                info.redirects = hop
                return info
            if not location:
                raise FetchError(f"HTTP {status} redirect without a Location header")
            try:  # http.client decodes headers as Latin-1; a UTF-8 Location is the common case
                location = location.encode("latin-1").decode("utf-8")
            except UnicodeError:
                pass
            nxt = urljoin(current, location.strip())
            scheme = urlsplit(nxt).scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                raise FetchError(f"redirect to a non-http(s) URL ({scheme or 'no'} scheme: {nxt[:100]})")
            if nxt in seen:
                raise FetchError(f"redirect loop ({current} -> {nxt}, visited before)")
            seen.add(nxt)
            current = nxt
        raise FetchError(f"too many redirects (more than {self.max_redirects})")

    def _get(self, url: str, parts: SplitResult, sink: BinaryIO, deadline: float,
             cancel: Optional[threading.Event] = None) -> tuple[Optional[int], Optional[str], Optional[FetchInfo]]:
        # One request. Returns (redirect status, Location, None) for a redirect, or (None, None, info) when the
        # body was written; raises FetchError otherwise.
        if time.monotonic() > deadline:
            raise FetchError(f"gave up after {self.total_timeout:g}s (total time per attempt)", retryable=True)
        try:
            conn, target, extra = self._connect(parts)
        except (ValueError, http.client.InvalidURL) as e:
            raise FetchError(f"malformed URL ({e})") from None
        headers = {"User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity",
                   "Connection": "close", **extra}
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            if resp.status in REDIRECT_STATUSES:
                return resp.status, resp.getheader("Location"), None  # the body is not read: the socket closes
            if resp.status != 200:
                retry = resp.status in RETRY_STATUSES
                raise FetchError(f"HTTP {resp.status} {resp.reason}".strip(), retryable=retry,
                                 retry_after=_retry_after(resp.getheader("Retry-After")) if retry else None)
            declared = resp.getheader("Content-Length")
            if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
                raise FetchError(f"too large: Content-Length {int(declared)} bytes exceeds the limit of "
                                 f"{self.max_bytes} (--max-bytes)")
            content_type = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            # A text response (an HTML error page, a "soft 404") is given up after its first bytes, unless they
            # carry an image signature (some servers label everything text/plain). Other types are not trusted
            # either way: whether the bytes decode decides, later.
            check_head = content_type.startswith("text/")
            head = b""
            total = 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(f"gave up after {self.total_timeout:g}s (total time per attempt)",
                                     retryable=True)
                if cancel is not None and cancel.is_set():
                    raise FetchError("cancelled", retryable=True)
                chunk = resp.read1(64 * 1024)
                if check_head and (len(head) + len(chunk) >= 16 or not chunk):
                    head = (head + chunk)[:16]
                    if sniff_bytes(head) is None:
                        raise FetchError(f"not an image (the server sent {content_type})")
                    check_head = False
                elif check_head:
                    head += chunk
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise FetchError(f"too large: more than {self.max_bytes} bytes (--max-bytes)")
                sink.write(chunk)
            return None, None, FetchInfo(url, total, content_type, 0)
        except FetchError:
            raise
        except (socket.timeout, TimeoutError):
            raise FetchError(f"timed out (no response or data for {self.timeout:g}s)", retryable=True) from None
        except http.client.InvalidURL as e:
            raise FetchError(f"malformed URL ({e})") from None
        except ssl.SSLCertVerificationError as e:
            raise FetchError(f"TLS certificate not valid ({e.verify_message or e})") from None
        except http.client.IncompleteRead as e:
            raise FetchError(f"connection closed early ({len(e.partial)} bytes read)", retryable=True) from None
        except (http.client.HTTPException, ConnectionError, ssl.SSLError) as e:
            raise FetchError(f"connection error ({type(e).__name__}: {e})".replace(": )", ")"),
                             retryable=True) from None
        except socket.gaierror as e:
            raise FetchError(f"host not found ({parts.hostname}: {e.strerror or e})", retryable=True) from None
        except OSError as e:
            raise FetchError(f"network error ({e.strerror or e})", retryable=True) from None
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------------------------
# Duplicates


class HashIndex:
    """Perceptual hashes and pixel digests of the images a download must not repeat; grows as images are saved.

    A lookup compares one image with all indexed ones at once (``data_tools.dedupe.pair_distances``): about a
    millisecond for 20,000 images. Not thread-safe by itself: the downloader holds a lock around lookup + add.
    """

    def __init__(self, threshold: int):
        from data_tools import dedupe

        dedupe.check_threshold(threshold)
        self.threshold = int(threshold)
        self._hashes = np.zeros((64, 2, 4), np.uint64)
        self.paths: list[str] = []
        self._digests: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, hashes: np.ndarray, digest: str, path: str) -> None:
        n = len(self.paths)
        if n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[n] = hashes
        self.paths.append(path)
        self._digests.setdefault(digest, n)

    def match(self, hashes: np.ndarray, digest: str) -> Optional[tuple[str, int, str]]:
        """``(path, distance, "exact"|"near")`` of the closest indexed duplicate, or None."""
        from data_tools import dedupe

        if digest in self._digests:
            return self.paths[self._digests[digest]], 0, "exact"
        n = len(self.paths)
        if n == 0:
            return None
        d = dedupe.pair_distances(np.broadcast_to(np.asarray(hashes, np.uint64), (n, 2, 4)), self._hashes[:n])
        k = int(np.argmin(d))
        return (self.paths[k], int(d[k]), "near") if d[k] <= self.threshold else None


# ---------------------------------------------------------------------------------------------------------------
# The download job


@dataclass
class DownloadSettings:
    """Limits and behaviour of :func:`download_images` (the script's flags)."""

    workers: int = DEFAULT_WORKERS
    timeout: float = DEFAULT_TIMEOUT
    total_timeout: Optional[float] = None
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    max_per_host: int = DEFAULT_MAX_PER_HOST
    max_per_class: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    quality: int = DEFAULT_QUALITY
    dedupe: bool = True
    threshold: Optional[int] = None  # data_tools.dedupe.DEFAULT_THRESHOLD when None
    retry_failed: bool = False
    user_agent: str = USER_AGENT
    use_env_proxy: bool = True
    seed: int = 0


@dataclass
class _State:
    # Shared between the worker threads: per_class and index are read and written under ``lock``; ``stop`` asks
    # every worker to finish its current request and start no other.
    lock: threading.Lock = field(default_factory=threading.Lock)
    per_class: Counter = field(default_factory=Counter)
    index: Optional[HashIndex] = None
    stop: threading.Event = field(default_factory=threading.Event)


class _Downloader:
    def __init__(self, out: Path, settings: DownloadSettings, state: _State, fetcher: Fetcher):
        self.out = out
        self.s = settings
        self.state = state
        self.fetcher = fetcher
        self.rng = random.Random(settings.seed)

    def _class_full(self, folder: str) -> bool:
        cap = self.s.max_per_class
        return cap is not None and self.state.per_class[folder] >= cap

    def _sleep_before_retry(self, attempt: int, error: FetchError) -> None:
        # Exponential back-off with jitter (so that workers that failed together do not retry together).
        wait = error.retry_after if error.retry_after is not None else \
            self.s.backoff * (2 ** attempt) * (1 + 0.25 * self.rng.random())
        self.state.stop.wait(wait)

    def process(self, item: UrlItem) -> Optional[dict]:
        """Fetch, check and save one URL; the manifest row (None when the run is being stopped)."""
        if self.state.stop.is_set():
            return None
        name = url_file_name(item.url)
        folder = self.out / item.folder
        dst = folder / name
        rel = f"{item.folder}/{name}"
        row = {"url": item.url, "class": item.label, "status": "", "reason": "", "path": "", "sha256": "",
               "final_url": "", "bytes": "", "width": "", "height": "", "attempts": 0}
        try:
            check_url(item.url)
        except FetchError as e:
            return {**row, "status": "failed", "reason": e.reason}
        if dst.is_file():  # written by an earlier run that did not get to record it
            return {**row, "status": "ok", "reason": "already in the target folder", "path": rel,
                    "sha256": sha256_file(dst)}
        with self.state.lock:
            if self._class_full(item.folder):
                return {**row, "status": "skipped", "reason": f"class already has {self.s.max_per_class} images "
                                                              f"(--max-per-class)"}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            return self._download(item, row, tmp, dst, rel)
        finally:
            tmp.unlink(missing_ok=True)

    def _download(self, item: UrlItem, row: dict, tmp: Path, dst: Path, rel: str) -> Optional[dict]:
        from data_tools import dedupe
        from ws_dan.images import UnreadableImageError, open_image, read_image_info

        info = None
        for attempt in range(self.s.retries + 1):
            row["attempts"] = attempt + 1
            try:
                with open(tmp, "wb") as sink:
                    info = self.fetcher.fetch(item.url, sink, cancel=self.state.stop)
                break
            except FetchError as e:
                if self.state.stop.is_set():
                    return None  # interrupted: not recorded, so the next run tries this URL again
                if not e.retryable:
                    return {**row, "status": "failed", "reason": e.reason}
                if attempt == self.s.retries:
                    return {**row, "status": "error", "reason": e.reason + (
                        f" ({attempt + 1} attempts)" if attempt else "")}
                LOG.debug("%s: %s; retrying", item.url, e.reason)
                self._sleep_before_retry(attempt, e)
        assert info is not None
        row.update(final_url=info.final_url if info.final_url != item.url else "", bytes=info.bytes)
        if info.bytes == 0:
            return {**row, "status": "failed", "reason": "empty response (0 bytes)"}
        try:
            header = read_image_info(tmp, max_pixels=self.s.max_pixels)
            image = open_image(tmp, max_pixels=self.s.max_pixels)
        except UnreadableImageError as e:
            what = f" (the server sent {info.content_type})" if info.content_type else ""
            return {**row, "status": "failed", "reason": f"{e.reason}{what}"}
        row.update(width=image.width, height=image.height)
        if min(image.size) < self.s.min_side:
            return {**row, "status": "failed", "reason": f"too small: {image.width}x{image.height} pixels "
                                                         f"(--min-side {self.s.min_side})"}
        hashes = dedupe.image_hashes(image) if self.state.index is not None else None
        digest = dedupe.pixel_digest(image) if self.state.index is not None else ""
        with self.state.lock:
            # Lookup, cap and reservation in one step: two threads fetching the same picture from different URLs
            # cannot both save it, and a class never exceeds its cap.
            if self.state.index is not None:
                dup = self.state.index.match(hashes, digest)
                if dup is not None:
                    path, dist, kind = dup
                    return {**row, "status": "duplicate",
                            "reason": f"duplicate of {path} ({kind}{'' if kind == 'exact' else f', distance {dist}'})"}
            if self._class_full(item.folder):
                return {**row, "status": "skipped", "reason": f"class already has {self.s.max_per_class} images "
                                                              f"(--max-per-class)"}
            self.state.per_class[item.folder] += 1
            if self.state.index is not None:
                self.state.index.add(hashes, digest, rel)
        try:
            keep_bytes = (header.format == "JPEG" and header.mode == "RGB" and header.orientation == 1
                          and header.frames == 1)
            if keep_bytes:  # already an upright RGB JPEG: no generation loss, no re-encoding cost
                os.replace(tmp, dst)
            else:
                save_image(image, dst, "JPEG", quality=self.s.quality)
        except BaseException as e:
            with self.state.lock:
                self.state.per_class[item.folder] -= 1
            if isinstance(e, OSError):  # disk full, permissions: the whole run has to stop, with a clear line
                raise DataToolError(f"{dst}: cannot write the image ({e.strerror or e})") from None
            raise
        return {**row, "status": "ok", "reason": "" if keep_bytes else f"re-encoded from {header.format or 'image'}",
                "path": rel, "sha256": sha256_file(dst)}


def _interleave(items: Sequence[UrlItem]) -> list[UrlItem]:
    # Round-robin over classes, keeping each class's order (search rank): every class makes progress together,
    # and --max-per-class keeps the best-ranked URLs.
    by_class: "OrderedDict[str, list[UrlItem]]" = OrderedDict()
    for it in items:
        by_class.setdefault(it.folder, []).append(it)
    queues = [list(reversed(v)) for v in by_class.values()]
    out = []
    while queues:
        queues = [q for q in queues if q]
        for q in queues:
            out.append(q.pop())
    return out


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r.get("url") and r.get("status") in STATUSES]


def _key(url: str, label: str) -> tuple[str, str]:
    return url, label


def download_images(urls, output_dir, reference: Sequence = (), settings: Optional[DownloadSettings] = None,
                    default_class: Optional[str] = None, hash_workers: Optional[int] = None,
                    progress: Progress = False, overwrite: bool = False) -> dict:
    """Download the images listed in ``urls`` (see :func:`read_url_list`) into ``output_dir/<class>/``.

    ``reference`` folders (e.g. the training and test splits) are only read: their images, and those already in
    ``output_dir``, are not downloaded again. ``output_dir`` may be new, empty, or an earlier download's folder
    (then the URLs done before are skipped); any other non-empty folder needs ``overwrite`` (no file is ever
    replaced). Writes ``download_manifest.csv`` and ``download_report.json``; returns the summary.
    """
    from data_tools import dedupe
    from ws_dan.io import write_csv, write_json

    s = settings or DownloadSettings()
    if s.workers < 1 or s.retries < 0 or s.min_side < 0 or not 1 <= s.quality <= 100:
        raise DataToolError("workers must be >= 1, retries >= 0, min_side >= 0, quality 1-100")
    if s.max_per_class is not None and s.max_per_class < 1:
        raise DataToolError(f"--max-per-class {s.max_per_class}: expected a positive number")
    threshold = dedupe.DEFAULT_THRESHOLD if s.threshold is None else s.threshold
    dedupe.check_threshold(threshold)
    fetcher = Fetcher(timeout=s.timeout, total_timeout=s.total_timeout, max_bytes=s.max_bytes,
                      max_redirects=s.max_redirects, max_per_host=s.max_per_host, user_agent=s.user_agent,
                      use_env_proxy=s.use_env_proxy)
    for ref in reference:
        if not Path(ref).is_dir():
            raise DataToolError(f"{ref}: expected a reference folder of images (e.g. the training split), found "
                                f"{'nothing (the path does not exist)' if not Path(ref).exists() else 'a file'}")
    items = read_url_list(urls, default_class=default_class)  # before touching the output: bad input fails first

    out = Path(output_dir)
    earlier = any((out / n).is_file() for n in (MANIFEST_NAME, JOURNAL_NAME, REPORT_NAME))
    prepare_output_dir(out, list(reference), overwrite=overwrite or earlier, tool="download_images")
    _remove_our_temp_files(out)

    # What earlier runs did: the manifest, then the journal of an interrupted run (newer).
    previous: dict[tuple[str, str], dict] = {}
    for row in _read_rows(out / MANIFEST_NAME) + _read_rows(out / JOURNAL_NAME):
        previous[_key(row["url"], row["class"])] = row

    # Decide per item: carried over from an earlier run, not attempted, or to do.
    rows: dict[tuple[str, str], dict] = {}
    first_class_of_url: dict[str, str] = {}
    todo: list[UrlItem] = []
    carried = 0
    for it in items:
        key = _key(it.url, it.label)
        if key in rows:
            continue  # listed twice for the same class
        owner = first_class_of_url.setdefault(it.url, it.label)
        if owner != it.label:
            rows[key] = {"url": it.url, "class": it.label, "status": "skipped",
                         "reason": f"same URL already listed for class {owner!r}"}
            continue
        old = previous.get(key)
        if old is not None and old["status"] in FINAL_STATUSES and not (s.retry_failed and old["status"] != "ok"):
            if old["status"] != "ok" or (old.get("path") and (out / old["path"]).is_file()):
                rows[key] = old
                carried += 1
                continue
        rows[key] = {}  # placeholder: keeps the input order
        todo.append(it)

    # Images the download must not repeat, and how many each class already has.
    state = _State()
    existing, _ = scan_dataset(out, splits=False)
    for img in existing:
        state.per_class[img.label] += 1
    ref_images = []
    for ref in reference:
        found, _ = scan_dataset(ref)
        ref_images += found
    hash_seconds = 0.0
    if s.dedupe:
        state.index = HashIndex(threshold)
        paths = [img.path for img in existing] + [img.path for img in ref_images]
        if paths:
            hashed = dedupe.hash_images(paths, workers=hash_workers, progress=progress)
            hash_seconds = hashed.seconds
            for p, h, d in zip(hashed.paths, hashed.hashes, hashed.digests):
                try:
                    shown = p.relative_to(out).as_posix()
                except ValueError:
                    shown = str(p)
                state.index.add(h, d, shown)
        LOG.info("duplicate check against %d images (%d in %s, %d in the reference folders)", len(state.index),
                 len(existing), out, len(ref_images))

    downloader = _Downloader(out, s, state, fetcher)
    journal_path = out / JOURNAL_NAME
    start = time.perf_counter()
    new_bytes = 0
    order = _interleave(todo)
    with open(journal_path, "a", newline="", encoding="utf-8") as jf:
        journal = csv.DictWriter(jf, fieldnames=MANIFEST_FIELDS)
        if jf.tell() == 0:
            journal.writeheader()
        ex = ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="download")
        try:
            futures = {ex.submit(downloader.process, it): it for it in order}
            for fut in track(as_completed(futures), total=len(futures), desc="downloading", progress=progress):
                row = fut.result()
                if row is None:
                    continue
                it = futures[fut]
                rows[_key(it.url, it.label)] = row
                if row["status"] == "ok" and row.get("bytes"):
                    new_bytes += int(row["bytes"])
                # One line per finished URL, flushed: an interrupted run keeps everything it did.
                journal.writerow(row)
                jf.flush()
        except BaseException:
            state.stop.set()  # workers finish their current request and start no new one
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    seconds = time.perf_counter() - start

    # The manifest: earlier rows for URLs no longer listed first, then this input's rows in input order.
    listed = set(rows)
    final_rows = [r for k, r in previous.items() if k not in listed]
    final_rows += [r for r in rows.values() if r]
    write_csv(out / MANIFEST_NAME, [{k: r.get(k, "") for k in MANIFEST_FIELDS} for r in final_rows], MANIFEST_FIELDS)
    journal_path.unlink(missing_ok=True)

    this_run = [r for k, r in rows.items() if r and r is not previous.get(k)]
    status_counts = Counter(r["status"] for r in rows.values() if r)
    per_class: dict[str, Counter] = {}
    for r in rows.values():
        if r:
            per_class.setdefault(r["class"], Counter())[r["status"]] += 1
    reasons = Counter(_reason_kind(r["reason"]) for r in this_run if r["status"] in ("failed", "error"))
    summary = {
        "urls": len(items), "unique_urls": len(rows), "carried_over": carried, "attempted": len(this_run),
        **{s_: status_counts.get(s_, 0) for s_ in STATUSES},
        "new_images": sum(1 for r in this_run if r["status"] == "ok"),
        "classes": len(per_class),
        "per_class": {c: {s_: n[s_] for s_ in STATUSES} for c, n in sorted(per_class.items())},
        "failure_reasons": dict(reasons.most_common()),
        "bytes_downloaded": new_bytes, "seconds": round(seconds, 2),
        "urls_per_second": round(len(this_run) / seconds, 2) if seconds > 0 else None,
        "duplicate_check": bool(s.dedupe), "threshold": threshold if s.dedupe else None,
        "reference": [str(r) for r in reference], "hash_seconds": round(hash_seconds, 2),
        "output_dir": str(out), "manifest": str(out / MANIFEST_NAME),
    }
    write_json(out / REPORT_NAME, summary)
    finish_output_dir(out)
    return summary


def _reason_kind(reason: str) -> str:
    """A reason without its details, for counting: 'HTTP 404 Not Found', 'timed out', 'too large' ..."""
    return re.split(r" \(|: |; ", reason, maxsplit=1)[0].strip()


_OUR_TEMP = re.compile(r"^\.[0-9a-f]{24}\.jpg\..+\.tmp$")


def _remove_our_temp_files(out: Path) -> None:
    # A killed run can leave the hidden partial downloads of its workers in the class folders; only files with
    # our own naming pattern are removed (os.scandir does not follow symlinked folders).
    for entry in os.scandir(out):
        if entry.is_dir(follow_symlinks=False):
            for f in os.scandir(entry.path):
                if f.is_file(follow_symlinks=False) and _OUR_TEMP.match(f.name):
                    Path(f.path).unlink(missing_ok=True)
