"""ATTRIBUTION.csv: who made each image of a merged training split and under which licence.

``merge_data.py`` copies downloaded images into the training split; the licences were recorded by the search
(``urls.csv``) and carried by the download (``download_manifest.csv``). :func:`write_attribution` reads every
download manifest found under the new data, matches each added image to its manifest row (by the path it was
downloaded to, then by its SHA-256, so a renamed or moved copy is still found) and writes ``ATTRIBUTION.csv``
beside the merged training split: one row per added image with its path in the split, the URL, and the licence
columns :data:`data_tools.licenses.LICENSE_FIELDS`. Rows an earlier merge wrote for other images are kept (an
in-place merge adds to the same split again). Written atomically; an image without a manifest row gets empty
licence columns (it is still listed, so the gap is visible).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from data_tools.licenses import LICENSE_FIELDS
from ws_dan.common.io import InputError, PathLike, read_csv_rows, write_csv

LOG = logging.getLogger(__name__)

ATTRIBUTION_NAME = "ATTRIBUTION.csv"
MANIFEST_NAME = "download_manifest.csv"  # data_tools.download.MANIFEST_NAME (not imported: download is heavier)
ATTRIBUTION_FIELDS = ("path", "class", "url", "sha256", *LICENSE_FIELDS)


def find_manifests(root: PathLike) -> list[Path]:
    """Every download manifest under ``root`` (the downloads folder itself, or folders of several downloads)."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):  # not following links: a manifest elsewhere is not ours
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST_NAME in files:
            found.append(Path(folder) / MANIFEST_NAME)
    return found


def _manifest_index(manifests: Iterable[Path]) -> tuple[dict, dict]:
    by_path, by_sha = {}, {}
    for m in manifests:
        try:
            rows = read_csv_rows(m)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            LOG.warning("%s: cannot be read (%s); its images get no licence columns", m, e)
            continue
        for r in rows:
            if r.get("status") != "ok" or not r.get("path"):
                continue
            by_path[str((m.parent / r["path"]).resolve())] = r
            if r.get("sha256"):
                by_sha.setdefault(r["sha256"], r)
    return by_path, by_sha


def write_attribution(added: Sequence[Mapping[str, str]], new_dir: PathLike, merged_dir: PathLike) -> dict:
    """Write ``ATTRIBUTION.csv`` beside ``merged_dir`` for the ``added`` images (merge_added.csv rows: source,
    dest, class, sha256); returns ``{"path", "images", "with_license", "per_license"}``."""
    merged_dir = Path(merged_dir)
    if not merged_dir.is_dir():
        raise InputError(f"{merged_dir}: expected the merged training split (a folder)")
    out = merged_dir.parent / ATTRIBUTION_NAME
    by_path, by_sha = _manifest_index(find_manifests(new_dir))
    root = merged_dir.resolve()
    rows: dict[str, dict] = {}
    if out.is_file():
        try:
            for r in read_csv_rows(out):
                if r.get("path"):
                    rows[r["path"]] = {k: r.get(k, "") for k in ATTRIBUTION_FIELDS}
        except (OSError, UnicodeDecodeError, ValueError) as e:
            LOG.warning("%s: cannot be read (%s); it is rewritten with this merge's images only", out, e)
    for a in added:
        dest = Path(a["dest"]).resolve()
        try:
            rel = dest.relative_to(root).as_posix()
        except ValueError:
            rel = str(dest)
        m = by_path.get(str(Path(a["source"]).resolve())) or by_sha.get(a.get("sha256", "")) or {}
        rows[rel] = {"path": rel, "class": a.get("class", ""), "url": m.get("url", ""),
                     "sha256": a.get("sha256", ""), **{k: m.get(k, "") for k in LICENSE_FIELDS}}
    ordered = [rows[k] for k in sorted(rows)]
    write_csv(out, ordered, ATTRIBUTION_FIELDS)
    per_license = license_counts(ordered)
    return {"path": str(out), "images": len(ordered), "with_license": sum(1 for r in ordered if r["license"]),
            "per_license": per_license}


def license_counts(rows: Iterable[Mapping[str, str]]) -> dict:
    """Images per licence code (``unknown`` for none), most common first."""
    counts: dict[str, int] = {}
    for r in rows:
        key = r.get("license") or "unknown"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def read_license_counts(data_dir: PathLike) -> dict:
    """Images per licence from ``data_dir/ATTRIBUTION.csv``; {} when there is none (or it cannot be read)."""
    path = Path(data_dir) / ATTRIBUTION_NAME
    if not path.is_file():
        return {}
    try:
        return license_counts(read_csv_rows(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        LOG.warning("%s: cannot be read (%s)", path, e)
        return {}
