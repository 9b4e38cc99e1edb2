"""Image URLs per class from open image-search APIs: the downloader's input, with the licence of every image.

Backends (``data_tools.search_backends``, one interface): Openverse (no key; the default), Wikimedia Commons
(no key; search or ``--commons-category``), and Google's Custom Search JSON API (a key; closed to new customers,
ends 2027-01-01). One query per class folder name (through a template such as ``"{class} exterior photo"``);
with several sources their results are merged per class and the same photo (Openverse indexes Commons and
Flickr) is kept once, from the first source that found it.

Output: a CSV with ``url, class, query, rank, title, mime, width, height, context_url`` and the licence columns
``source, license, license_version, license_url, creator, attribution, landing_url``, and a JSON report beside it
(``<output stem>_report.json``, per class: query, requests, results, complete or the error). The CSV and the
report are rewritten after each class, so a stop keeps the classes done; ``resume`` searches only the others.

Errors per class: a malformed answer or a redirect off the API's host marks that class incomplete (its error in
the report) and the run goes on; a spent quota stops the run cleanly; a refusal (bad key) stops it with an error.
Credentials come from environment variables only and never appear in a log line or an output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from data_tools.parallel import Progress, track
from data_tools.search_backends import BACKENDS, DEFAULT_SOURCE, make_backend  # noqa: F401
from data_tools.search_backends.base import (  # noqa: F401  (re-exported)
    OUTPUT_FIELDS,
    QuotaExceeded,
    RateLimiter,
    ResponseError,
    SearchBackend,
    SearchError,
    add_if_new,
    photo_keys,
)
from data_tools.search_backends.google import (  # noqa: F401  (re-exported: the names scripts and tests import)
    API_KEY_ENV,
    DEFAULT_API_BASE_URL,
    ENGINE_ID_ENV,
    MAX_RESULTS,
    PAGE_SIZE,
    SearchClient,
)
from ws_dan.common.dataset_folders import split_folders
from ws_dan.common.io import InputError

LOG = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{class}"


# ---------------------------------------------------------------------------------------------------------------
# Queries per class, and the whole job


def class_names(data_dir) -> list[str]:
    """The class folder names of ``data_dir`` (a split such as train/, or a dataset root: then its train/)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: expected a folder of class folders (e.g. my_cars/train), found "
                            f"{'nothing (the path does not exist)' if not data_dir.exists() else 'a file'}")
    splits = split_folders(data_dir)
    if splits:
        train = [p for p in splits if p.name.lower() == "train"]
        if not train:
            raise InputError(f"{data_dir}: holds split folders ({', '.join(p.name for p in splits)}) but no "
                                f"train/; pass the split whose class folders to search for")
        LOG.info("%s: using the class folders of %s", data_dir, train[0])
        data_dir = train[0]
    names = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise InputError(f"{data_dir}: has no class sub-folders (expected {data_dir}/<class>/)")
    return names


def make_query(template: str, class_name: str) -> str:
    """The query for a class: ``template`` with ``{class}`` replaced by the class name (underscores as spaces)."""
    if "{class}" not in template:
        raise InputError(f"--query-template {template!r}: expected a template containing {{class}}, e.g. "
                            f"'{{class}} exterior photo'")
    return " ".join(template.replace("{class}", class_name.replace("_", " ")).split())


def report_path(output) -> Path:
    """The JSON report written beside the output CSV."""
    output = Path(output)
    return output.with_name(output.stem + "_report.json")


def _read_previous(output: Path) -> tuple[dict, list[dict]]:
    """The classes of an earlier run's report and its rows; ``({}, [])`` with one warning when either cannot be
    read (truncated, binary, not UTF-8, wrong shape): the run then searches every class again, since the report
    is the only record of which classes finished, and the CSV is rewritten from scratch."""
    from ws_dan.common.io import read_csv_rows

    rp = report_path(output)
    if not rp.is_file():
        return {}, []
    try:
        old = json.loads(rp.read_bytes().decode("utf-8"))
        classes = old.get("classes") if isinstance(old, dict) else None
        if not isinstance(classes, dict):
            raise ValueError("expected an object with a 'classes' object")
        rows = read_csv_rows(output)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        why = "not UTF-8" if isinstance(e, UnicodeDecodeError) else str(e).split("\n")[0][:120]
        LOG.warning("%s: cannot be read (%s); --resume starts over and searches every class again", rp, why)
        return {}, []
    return {c: r for c, r in classes.items() if isinstance(r, dict)}, rows


def search_images(data_dir, output, client: Union[SearchBackend, Sequence[SearchBackend]], per_class: int = 100,
                  template: str = DEFAULT_TEMPLATE, classes: Optional[Sequence[str]] = None, resume: bool = False,
                  overwrite: bool = False, progress: Progress = False) -> dict:
    """Search every class of ``data_dir`` with one or more backends and write the URL list ``output`` (CSV).

    The CSV and the report are rewritten after each class, so a stop (quota, Ctrl-C, an error) keeps the classes
    done; ``resume`` keeps the classes an earlier run completed with the same query and sources and searches the
    others (a report that cannot be read: every class again, with a warning). An existing output needs
    ``resume`` or ``overwrite``. A spent quota ends the run early with ``summary["stopped"]`` set; a malformed
    answer leaves its class incomplete (``summary["classes_incomplete"]``). Raises :class:`SearchError` for
    refusals retrying cannot fix (after writing what was found).
    """
    from ws_dan.common.io import write_csv, write_json

    backends = _backends(client, per_class)
    names = list(classes) if classes is not None else class_names(data_dir)
    queries = {c: make_query(template, c) for c in names}
    sources = [b.describe_settings() for b in backends]
    output = Path(output)
    _check_output(output, data_dir)
    rows, report = _kept_from_before(output, resume, overwrite, queries, per_class, sources)
    output.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_csv(output, rows, OUTPUT_FIELDS)
        write_json(report_path(output), report)

    stopped = None
    start_requests = sum(b.requests for b in backends)
    todo = [c for c in names if c not in report["classes"]]
    name = None
    try:
        for name in track(todo, total=len(todo), desc="searching", progress=progress):
            entry = {"query": queries[name], "per_class": per_class, "results": 0, "complete": False, "error": "",
                     "sources": sources}
            report["classes"][name] = entry
            try:
                found = _search_class(backends, name, queries[name], per_class, entry)
            except QuotaExceeded as e:
                entry["error"] = str(e)
                stopped = str(e)
                break
            if not entry["error"]:
                rows += [{"class": name, "query": queries[name],
                          **{k: v for k, v in r.items() if not k.startswith("_")}} for r in found]
                entry.update(results=len(found), complete=True)
            LOG.debug("%s: %d results from %d request(s)", name, len(found), entry["requests"])
            save()
    except SearchError as e:
        if name is not None:
            report["classes"][name]["error"] = str(e)
        report["stopped"] = str(e)
        save()
        raise
    report["stopped"] = stopped
    save()
    return _summary(output, names, rows, report, sum(b.requests for b in backends) - start_requests, per_class,
                    template, stopped, [b.name for b in backends])


def _summary(output: Path, names: list[str], rows: list[dict], report: dict, requests: int, per_class: int,
             template: str, stopped: Optional[str], sources: list[str]) -> dict:
    complete = [c for c, r in report["classes"].items() if r.get("complete")]
    incomplete = {c: r["error"] for c, r in report["classes"].items() if not r.get("complete") and r.get("error")}
    return {
        "output": str(output), "report": str(report_path(output)), "classes": len(names),
        "classes_complete": len(complete), "classes_left": [c for c in names if c not in complete],
        "classes_incomplete": incomplete,
        "urls": len(rows), "requests": requests, "per_class": per_class,
        "template": template, "stopped": stopped, "sources": sources,
        "fewest_results": min((report["classes"][c].get("results", 0) for c in complete), default=0),
    }


def _backends(client: Union[SearchBackend, Sequence[SearchBackend]], per_class: int) -> list[SearchBackend]:
    """The sources as a list; refused when there is none or ``per_class`` is more than any of them serves."""
    backends = [client] if isinstance(client, SearchBackend) else list(client)
    if not backends:
        raise InputError("no search source given")
    limit = max(b.max_results for b in backends)
    if not 1 <= per_class <= limit:
        raise InputError(f"--per-class {per_class}: expected 1 to {limit} (the API's limit per query)")
    return backends


def _check_output(output: Path, data_dir) -> None:
    if output.is_dir():
        raise InputError(f"{output}: expected a CSV file name for the URL list, found a folder")
    if data_dir is not None and Path(data_dir).resolve() in output.resolve().parents:
        # A CSV inside the class folders would be scanned (and skipped) by every tool as a stray file.
        raise InputError(f"{output}: would be written inside the dataset folder {data_dir}; choose a path "
                         f"outside it")


def _kept_from_before(output: Path, resume: bool, overwrite: bool, queries: dict[str, str], per_class: int,
                      sources: list[dict]) -> tuple[list[dict], dict]:
    """The rows and report entries an earlier run completed with the same query, at least ``per_class`` results
    and the same first source (``resume``); an existing output is refused without ``resume`` or ``overwrite``."""
    rows: list[dict] = []
    report: dict = {"classes": {}}
    if not output.exists():
        return rows, report
    if not resume:
        if not overwrite:
            raise InputError(f"{output}: exists; pass --resume to continue an interrupted search or --overwrite "
                             f"to replace it")
        return rows, report
    old, old_rows = _read_previous(output)
    done = {c for c, r in old.items()
            if r.get("complete") is True and r.get("query") == queries.get(c)
            and isinstance(r.get("per_class", 0), int) and r.get("per_class", 0) >= per_class
            and r.get("sources", [{"source": "google", "licenses": "all", "params": {}}])[0].get("source")
            == sources[0]["source"]} if old else set()
    rows = [r for r in old_rows if r.get("class") in done]
    report["classes"] = {c: old[c] for c in done}
    LOG.info("resuming: %d class(es) already searched", len(done))
    return rows, report


def _search_class(backends: Sequence[SearchBackend], name: str, query: str, per_class: int, entry: dict
                  ) -> list[dict]:
    """Up to ``per_class`` results for one class, the backends in turn, each photo once (the first source's
    copy). A malformed answer leaves the class incomplete (``entry["error"]``, no results); the requests made go
    to ``entry["requests"]``. QuotaExceeded is raised."""
    before = sum(b.requests for b in backends)
    found: list[dict] = []
    seen: set[str] = set()
    try:
        for backend in backends:
            if len(found) >= per_class:
                break
            for r in backend.search(query, min(per_class, backend.max_results)):
                # the same photo from an earlier source is skipped
                if add_if_new(found, seen, r) and len(found) >= per_class:
                    break
    except ResponseError as e:
        entry["error"] = str(e)
        LOG.warning("class %r: %s; marked incomplete (rerun with --resume)", name, e)
        found = []
    finally:
        entry["requests"] = sum(b.requests for b in backends) - before
    return found
