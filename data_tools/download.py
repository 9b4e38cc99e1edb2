"""Download images from lists of URLs into class folders: concurrent, bounded, resumable, never outside the target.

Input (:func:`read_url_list`): a CSV with a URL column and a class column (``url,class``: what
``scripts/search_images.py`` writes, or any image-search export), a text file (``URL CLASS`` or ``CLASS<TAB>URL``
per line), or a folder holding one ``<class>.txt`` file of URLs per class.

What a download must get through before a file appears in ``OUT/<class>/``:

* **The URL**: http or https only (``file://``, ``ftp://``, ``data:`` ... are refused without any network
  access); no ``user:password@``.
* **The transfer** (:class:`data_tools.image_fetch.Fetcher` on the shared HTTP layer ``data_tools.http``, so
  that every limit holds on every hop):
  a timeout on the connection and on every read, a total time limit per attempt, a size cap checked against
  ``Content-Length`` *and* counted while streaming (a missing or lying header changes nothing), redirects followed
  only to http(s) URLs, at most ``max_redirects`` of them, loops detected; at most ``max_per_host`` requests to
  one host at a time. Timeouts, connection errors, 429 and 5xx are retried with exponential back-off (or the
  server's ``Retry-After``); other failures are final.
* **The content**: the bytes must decode as an image (any format PIL reads; an HTML page does not), through
  ``ws_dan.common.images.open_image`` (EXIF orientation, RGB, decompression-bomb limit, truncation), and be at least
  ``min_side`` pixels on the short side. Upright RGB JPEGs are kept byte for byte; everything else is re-encoded
  to an RGB JPEG.
* **Duplicates**: an image whose pixels or perceptual hashes (``data_tools.dedupe``, same distance and default
  threshold) match an image already in the target folder, in a ``reference`` folder (the training and test
  splits) or downloaded earlier in the run is not saved.
* **Names**: the file name is a hash of the URL (``<sha256[:24]>.jpg``), never taken from the URL, and the class
  folder name is the class name with path separators, control characters, ``..`` and leading dots removed
  (:func:`safe_folder_name`), so nothing can be written outside the target folder.
* **Links**: before anything is written, the destination's folder, resolved, must be a class folder directly
  inside the resolved target, and neither the class folder nor the file may be a symbolic link: a class folder
  that links elsewhere is refused (one warning per class, its URLs recorded as failed, counted in the summary's
  ``refused_classes``), so no file is ever written outside the target, whatever links it holds.

Every URL gets a row in ``download_manifest.csv`` (url, class, status, reason, path, sha256, ..., and the licence
columns of the search row: source, license, license_version, license_url, creator, attribution, landing_url).
Rows are also appended to a journal as they complete, so an interrupted run loses nothing; running the same command
again skips the URLs already downloaded (and the final failures) and retries the transient ones.

Modules: URL lists and names in ``data_tools.url_list``, the transfer in ``data_tools.image_fetch``, the
duplicate index in ``data_tools.hash_index``; this module is the job. The library never prints;
``scripts/download_images.py`` is the command-line front end.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from data_tools.hash_index import HashIndex
from data_tools.http import MAX_RETRY_AFTER, Backoff, with_retries
from data_tools.image_fetch import (  # noqa: F401  (re-exported: the names scripts and tests import from here)
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PER_HOST,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Fetcher,
    FetchError,
    FetchInfo,
    check_url,
)
from data_tools.licenses import LICENSE_FIELDS
from data_tools.parallel import Progress, track
from data_tools.url_list import (  # noqa: F401  (re-exported)
    CLASS_COLUMNS,
    RESERVED_NAMES,
    URL_COLUMNS,
    UrlItem,
    read_url_list,
    safe_folder_name,
    url_file_name,
)
from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.io import InputError, sha256_file
from ws_dan.common.outputs import copy_file, finish_output_dir, prepare_output_dir, save_image

LOG = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0
#: Decompression-bomb limit for downloads: larger than any camera photo (a 50 MP phone image is 52M pixels) but
#: well below images.py's 256M default, because up to ``workers`` images are decoded at the same time.
DEFAULT_MAX_PIXELS = 100 * 1024 * 1024
DEFAULT_MIN_SIDE = 32
DEFAULT_QUALITY = 95

MANIFEST_NAME = "download_manifest.csv"
JOURNAL_NAME = ".download_journal.csv"
REPORT_NAME = "download_report.json"
assert (MANIFEST_NAME, REPORT_NAME) == RESERVED_NAMES
MANIFEST_FIELDS = ("url", "class", "status", "reason", "path", "sha256", "final_url", "bytes", "width", "height",
                   "attempts", *LICENSE_FIELDS)
#: ok: saved (now or by an earlier run); duplicate: decoded but already present; skipped: not attempted
#: (class full, URL listed twice); failed: final (404, not an image, too large, bad URL, a symlinked class
#: folder...); error: transient (timeout, connection, 5xx), retried by the next run.
STATUSES = ("ok", "duplicate", "skipped", "failed", "error")
#: Statuses a rerun does not try again (unless ``retry_failed``).
FINAL_STATUSES = ("ok", "duplicate", "failed")


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
    #: class folder -> why nothing is written into it (a symbolic link...): reported once per class.
    refused: dict = field(default_factory=dict)


def destination_problem(root: Path, folder: Path, dst: Path) -> Optional[str]:
    """Why ``dst`` (``root/<class folder>/<file>``) must not be written, or None when it may.

    The rule, for every tool that writes into an output root: the destination's folder, resolved, is a folder
    directly inside the resolved root, and neither that folder nor the file itself is a symbolic link (a link
    would carry the write to wherever it points). ``root`` itself may be a link: it is resolved first.
    """
    if folder.is_symlink():
        return f"class folder {folder.name!r} is a symbolic link (to {os.readlink(folder)}); refusing to write " \
               f"through it (replace it with a real folder)"
    if folder.exists() and not folder.is_dir():
        return f"{folder.name!r} in the target is a file, not a class folder"
    if dst.is_symlink():
        return f"{dst.name} in class folder {folder.name!r} is a symbolic link; refusing to write through it"
    real_root = root.resolve()
    real_parent = folder.resolve() if folder.exists() else real_root / folder.name
    if real_parent.parent != real_root:
        return f"class folder {folder.name!r} resolves to {real_parent}, outside the target {real_root}"
    return None


class _Refused(Exception):
    """A destination found unsafe just before the write."""


class _Downloader:
    def __init__(self, out: Path, settings: DownloadSettings, state: _State, fetcher: Fetcher):
        self.out = out
        self.s = settings
        self.state = state
        self.fetcher = fetcher
        self.backoff = Backoff(settings.backoff, cap=MAX_RETRY_AFTER, seed=settings.seed)

    def _class_full(self, folder: str) -> bool:
        cap = self.s.max_per_class
        return cap is not None and self.state.per_class[folder] >= cap

    def _refuse(self, item: UrlItem, reason: str) -> str:
        with self.state.lock:
            if item.folder not in self.state.refused:
                self.state.refused[item.folder] = reason
                LOG.warning("class %r: %s", item.label, reason)  # one line per class, not one per URL
        return reason

    def process(self, item: UrlItem) -> Optional[dict]:
        """Fetch, check and save one URL; the manifest row (None when the run is being stopped)."""
        if self.state.stop.is_set():
            return None
        name = url_file_name(item.url)
        folder = self.out / item.folder
        dst = folder / name
        rel = f"{item.folder}/{name}"
        row = {"url": item.url, "class": item.label, "status": "", "reason": "", "path": "", "sha256": "",
               "final_url": "", "bytes": "", "width": "", "height": "", "attempts": 0,
               **{k: item.meta.get(k, "") for k in LICENSE_FIELDS}}
        try:
            check_url(item.url)
        except FetchError as e:
            return {**row, "status": "failed", "reason": e.reason}
        problem = destination_problem(self.out, folder, dst)
        if problem:
            return {**row, "status": "failed", "reason": self._refuse(item, problem)}
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
        got = self._fetch(item, row, tmp)
        if not isinstance(got, FetchInfo):
            return got  # a failure row, or None: interrupted
        decoded = self._decode(row, tmp, got)
        if isinstance(decoded, dict):
            return decoded  # not an image, or too small
        header, image = decoded
        refused = self._reserve(item, row, image, rel)
        if refused is not None:
            return refused  # a duplicate, or its class is full
        return self._save(item, row, tmp, dst, rel, header, image)

    def _fetch(self, item: UrlItem, row: dict, tmp: Path) -> Union[FetchInfo, dict, None]:
        """The URL's bytes into ``tmp``, retried with back-off; the transfer's info, a failure row, or None when
        the run is being stopped (the URL is then not recorded, so the next run tries it again)."""
        def attempt(n: int):
            row["attempts"] = n + 1
            with open(tmp, "wb") as sink:
                return self.fetcher.fetch(item.url, sink, cancel=self.state.stop)

        def on_retry(n: int, e: FetchError, wait: float) -> None:
            LOG.debug("%s: %s; retrying in %.1fs", item.url, e.reason, wait)

        try:
            # stop.wait as the sleep: Ctrl-C does not wait for a back-off to end
            info = with_retries(attempt, self.s.retries, self.backoff, sleep=self.state.stop.wait, on_retry=on_retry)
        except FetchError as e:
            if self.state.stop.is_set():
                return None
            if not e.retryable:
                return {**row, "status": "failed", "reason": e.reason}
            n = row["attempts"]
            return {**row, "status": "error", "reason": e.reason + (f" ({n} attempts)" if n > 1 else "")}
        assert info is not None
        row.update(final_url=info.final_url if info.final_url != item.url else "", bytes=info.bytes)
        if info.bytes == 0:
            return {**row, "status": "failed", "reason": "empty response (0 bytes)"}
        return info

    def _decode(self, row: dict, tmp: Path, info: FetchInfo) -> Union[tuple, dict]:
        """(header, upright RGB image) of the download, or a failure row: not an image, or below --min-side."""
        from ws_dan.common.images import UnreadableImageError, open_image, read_image_info

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
        return header, image

    def _reserve(self, item: UrlItem, row: dict, image, rel: str) -> Optional[dict]:
        """Claim the image's place: None when it may be saved (counted in its class, its hashes indexed), else the
        row of a duplicate or of a full class."""
        from data_tools import dedupe

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
        return None

    def _save(self, item: UrlItem, row: dict, tmp: Path, dst: Path, rel: str, header, image) -> dict:
        """Write the reserved image to ``dst`` (an upright RGB JPEG as downloaded, anything else re-encoded); a
        destination found unsafe just now is a failure row, a disk error stops the run. The reservation is undone
        when nothing was written."""
        try:
            problem = destination_problem(self.out, dst.parent, dst)  # again: the folder may have changed
            if problem:
                raise _Refused(self._refuse(item, problem))
            keep_bytes = (header.format == "JPEG" and header.mode == "RGB" and header.orientation == 1
                          and header.frames == 1)
            if keep_bytes:  # already an upright RGB JPEG: no generation loss, no re-encoding cost
                copy_file(tmp, dst, link=True)  # the download itself, linked into place atomically
            else:
                save_image(image, dst, "JPEG", quality=self.s.quality)
        except BaseException as e:
            with self.state.lock:
                self.state.per_class[item.folder] -= 1
            if isinstance(e, _Refused):
                return {**row, "status": "failed", "reason": str(e)}
            if isinstance(e, OSError):  # disk full, permissions: the whole run has to stop, with a clear line
                raise InputError(f"{dst}: cannot write the image ({e.strerror or e})") from None
            raise
        return {**row, "status": "ok", "reason": "" if keep_bytes else f"re-encoded from {header.format or 'image'}",
                "path": rel, "sha256": sha256_file(dst)}


def _interleave(items: Sequence[UrlItem]) -> list[UrlItem]:
    # Round-robin over classes, keeping each class's order (search rank): every class makes progress together,
    # and --max-per-class keeps the best-ranked URLs.
    by_class: OrderedDict[str, list[UrlItem]] = OrderedDict()
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
    from ws_dan.common.io import write_json

    s = settings or DownloadSettings()
    threshold = _check_settings(s)
    fetcher = Fetcher(timeout=s.timeout, total_timeout=s.total_timeout, max_bytes=s.max_bytes,
                      max_redirects=s.max_redirects, max_per_host=s.max_per_host, user_agent=s.user_agent,
                      use_env_proxy=s.use_env_proxy)
    _check_reference(reference)
    items = read_url_list(urls, default_class=default_class)  # before touching the output: bad input fails first
    out = Path(output_dir)
    earlier = any((out / n).is_file() for n in (MANIFEST_NAME, JOURNAL_NAME, REPORT_NAME))
    prepare_output_dir(out, list(reference), overwrite=overwrite or earlier, tool="download_images")
    _remove_our_temp_files(out)
    previous = _previous_rows(out)  # what earlier runs did
    rows, todo, carried = _plan(items, previous, out, s)  # per URL: carried over, not attempted, or to do
    state, hash_seconds = _known_images(out, reference, s, threshold, hash_workers, progress)
    seconds, new_bytes = _fetch_all(_Downloader(out, s, state, fetcher), todo, rows, out / JOURNAL_NAME, s.workers,
                                    progress)
    this_run = _write_manifest(out, previous, rows)
    summary = _summary(items, rows, this_run, carried, state, reference, s, threshold, new_bytes, seconds,
                       hash_seconds, out)
    write_json(out / REPORT_NAME, summary)
    finish_output_dir(out)
    return summary


def _check_settings(s: DownloadSettings) -> int:
    """Refuse settings out of range; the duplicate threshold to use."""
    from data_tools import dedupe

    if s.workers < 1 or s.retries < 0 or s.min_side < 0 or not 1 <= s.quality <= 100:
        raise InputError("workers must be >= 1, retries >= 0, min_side >= 0, quality 1-100")
    if s.max_per_class is not None and s.max_per_class < 1:
        raise InputError(f"--max-per-class {s.max_per_class}: expected a positive number")
    threshold = dedupe.DEFAULT_THRESHOLD if s.threshold is None else s.threshold
    dedupe.check_threshold(threshold)
    return threshold


def _check_reference(reference: Sequence) -> None:
    for ref in reference:
        if not Path(ref).is_dir():
            raise InputError(f"{ref}: expected a reference folder of images (e.g. the training split), found "
                             f"{'nothing (the path does not exist)' if not Path(ref).exists() else 'a file'}")


def _previous_rows(out: Path) -> dict[tuple[str, str], dict]:
    """(url, class) -> its row from earlier runs: the manifest, then the journal of an interrupted run (newer)."""
    previous: dict[tuple[str, str], dict] = {}
    for row in _read_rows(out / MANIFEST_NAME) + _read_rows(out / JOURNAL_NAME):
        previous[_key(row["url"], row["class"])] = row
    return previous


def _plan(items: Sequence[UrlItem], previous: dict, out: Path, s: DownloadSettings
          ) -> tuple[dict[tuple[str, str], dict], list[UrlItem], int]:
    """Decide per item: carried over from an earlier run, not attempted (a URL listed for two classes), or to do.
    Returns the rows in input order (``{}`` for those to do), the items to do, and how many were carried over."""
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
    return rows, todo, carried


def _known_images(out: Path, reference: Sequence, s: DownloadSettings, threshold: int,
                  hash_workers: Optional[int], progress: Progress) -> tuple[_State, float]:
    """The workers' shared state: how many images each class already has and (unless ``s.dedupe`` is off) the
    hashes of the images a download must not repeat, those in ``out`` and in the reference folders; also the
    hashing time."""
    from data_tools import dedupe

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
    return state, hash_seconds


def _fetch_all(downloader: _Downloader, todo: list[UrlItem], rows: dict, journal_path: Path, workers: int,
               progress: Progress) -> tuple[float, int]:
    """Download ``todo`` on ``workers`` threads (classes interleaved), each finished row into ``rows`` and, at once,
    into the journal; on an error or Ctrl-C the workers finish their current request and start none. Returns the
    seconds taken and the bytes of the new images."""
    if journal_path.is_symlink():  # appending would follow it to wherever it points
        raise InputError(f"{journal_path}: is a symbolic link; remove it (the journal is the downloader's own "
                         f"file and is never written through a link)")
    start = time.perf_counter()
    new_bytes = 0
    order = _interleave(todo)
    with open(journal_path, "a", newline="", encoding="utf-8") as jf:
        journal = csv.DictWriter(jf, fieldnames=MANIFEST_FIELDS)
        if jf.tell() == 0:
            journal.writeheader()
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
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
            downloader.state.stop.set()  # workers finish their current request and start no new one
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    return time.perf_counter() - start, new_bytes


def _write_manifest(out: Path, previous: dict, rows: dict) -> list[dict]:
    """The manifest: earlier rows for URLs no longer listed first, then this input's rows in input order; the
    journal is then removed. Returns the rows this run made."""
    from ws_dan.common.io import write_csv

    listed = set(rows)
    final_rows = [r for k, r in previous.items() if k not in listed]
    final_rows += [r for r in rows.values() if r]
    write_csv(out / MANIFEST_NAME, [{k: r.get(k, "") for k in MANIFEST_FIELDS} for r in final_rows], MANIFEST_FIELDS)
    (out / JOURNAL_NAME).unlink(missing_ok=True)
    return [r for k, r in rows.items() if r and r is not previous.get(k)]


def _summary(items: Sequence[UrlItem], rows: dict, this_run: list[dict], carried: int, state: _State,
             reference: Sequence, s: DownloadSettings, threshold: int, new_bytes: int, seconds: float,
             hash_seconds: float, out: Path) -> dict:
    """download_report.json: counts per status, class and failure reason, speed, and where everything went."""
    status_counts = Counter(r["status"] for r in rows.values() if r)
    per_class: dict[str, Counter] = {}
    for r in rows.values():
        if r:
            per_class.setdefault(r["class"], Counter())[r["status"]] += 1
    reasons = Counter(_reason_kind(r["reason"]) for r in this_run if r["status"] in ("failed", "error"))
    return {
        "urls": len(items), "unique_urls": len(rows), "carried_over": carried, "attempted": len(this_run),
        **{s_: status_counts.get(s_, 0) for s_ in STATUSES},
        "new_images": sum(1 for r in this_run if r["status"] == "ok"),
        "classes": len(per_class),
        "per_class": {c: {s_: n[s_] for s_ in STATUSES} for c, n in sorted(per_class.items())},
        "failure_reasons": dict(reasons.most_common()),
        "bytes_downloaded": new_bytes, "seconds": round(seconds, 2),
        "urls_per_second": round(len(this_run) / seconds, 2) if seconds > 0 else None,
        "duplicate_check": bool(s.dedupe), "threshold": threshold if s.dedupe else None,
        "refused_classes": {next((it.label for it in items if it.folder == f), f): why
                            for f, why in sorted(state.refused.items())},
        "reference": [str(r) for r in reference], "hash_seconds": round(hash_seconds, 2),
        "output_dir": str(out), "manifest": str(out / MANIFEST_NAME),
    }


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
