"""URL lists, the downloader's input: a CSV, a text file, or a folder of ``<class>.txt`` files; safe names.

:func:`read_url_list` reads ``url,class`` CSVs (what ``scripts/search_images.py`` writes, or any image-search
export; the licence columns :data:`data_tools.licenses.LICENSE_FIELDS` are carried along when present), text files
(``URL CLASS`` or ``CLASS<TAB>URL`` per line) and folders of ``<class>.txt`` files. :func:`safe_folder_name` and
:func:`url_file_name` make the names a download writes: derived from the class name with everything that could
point outside the target removed, and from the URL's hash, never from its path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data_tools.licenses import LICENSE_FIELDS
from ws_dan.common.io import InputError

LOG = logging.getLogger(__name__)

#: File names the downloader writes beside the class folders: a class folder may not take one of them.
RESERVED_NAMES = ("download_manifest.csv", "download_report.json")

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
    #: The licence columns of a search row (source, license, creator ...), carried into the manifest.
    meta: dict = field(default_factory=dict, compare=False, hash=False)


_SEPARATORS = re.compile(r"[\x00-\x1f\x7f/\\]")
_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_FOLDER_BYTES = 150


def safe_folder_name(name: str) -> str:
    """A class name made safe as one folder name: it cannot point outside the folder that holds it.

    Path separators and control characters become ``_``, every ``..`` becomes ``_``, leading and trailing dots and
    spaces go (a leading dot would also hide the folder from every scan); on Windows the characters it forbids
    and its reserved device names are escaped too. Very long names are shortened with a hash suffix. Raises
    :class:`InputError` when nothing usable is left.
    """
    text = unicodedata.normalize("NFC", str(name)).strip()
    text = _SEPARATORS.sub("_", text)
    if os.name == "nt":  # legal on POSIX, where existing class folders may well use them: keep them there
        text = _WINDOWS_UNSAFE.sub("_", text)
    while ".." in text:
        text = text.replace("..", "_")
    text = text.strip(". ")
    if not text:
        raise InputError(f"class name {name!r}: nothing is left for a folder name once path separators and "
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

    Raises :class:`InputError` naming the file (and line) for a missing input, a CSV without the columns, a
    line without a class, or no URL at all. The URLs are not checked here (a bad one becomes a failed row).
    """
    path = Path(path)
    if path.is_dir():
        items = _read_folder(path)
    elif path.is_file():
        items = _read_file(path, default_class)
    else:
        raise InputError(f"{path}: expected a CSV or text file of image URLs, or a folder of <class>.txt files; "
                         f"found {'nothing (the path does not exist)' if not path.exists() else 'something else'}")
    if not items:
        raise InputError(f"{path}: no URLs found")
    _check_folder_collisions(items)
    return items


def _read_folder(path: Path) -> list[UrlItem]:
    """Every ``<class>.txt`` of the folder, one URL per line."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt"
                   and not p.name.startswith("."))
    if not files:
        raise InputError(f"{path}: expected a folder with one <class>.txt file of URLs per class; found no "
                         f".txt file")
    items = []
    for f in files:
        for n, line in enumerate(_read_text(f).splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                items.append(_item(line, f.stem, f"{f}:{n}"))
    return items


def _read_file(path: Path, default_class: Optional[str]) -> list[UrlItem]:
    """A CSV with a header naming a URL column (the licence columns carried along), else a text file."""
    text = _read_text(path)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    header = next(csv.reader([first], delimiter=delimiter)) if first else []
    url_col = _find_column(header, URL_COLUMNS)
    items = []
    if url_col is None or "://" in first:
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            url, label = _split_line(line)
            items.append(_item(url, label or default_class, f"{path}:{n}"))
        return items
    class_col = _find_column(header, CLASS_COLUMNS)
    if class_col is None and default_class is None:
        raise InputError(f"{path}: CSV has a URL column but no class column (expected one of "
                         f"{', '.join(CLASS_COLUMNS)}; found {', '.join(header)})")
    reader = csv.reader(io.StringIO(text.lstrip("\r\n")), delimiter=delimiter)  # quoted newlines stay
    next(reader)
    meta_cols = [(name, _find_column(header, (name,))) for name in LICENSE_FIELDS]
    meta_cols = [(name, col) for name, col in meta_cols if col is not None]
    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        url = row[url_col].strip() if url_col < len(row) else ""
        label = row[class_col].strip() if class_col is not None and class_col < len(row) else ""
        meta = {name: row[col].strip() for name, col in meta_cols if col < len(row) and row[col].strip()}
        items.append(_item(url, label or default_class, f"{path}:{reader.line_num}", meta))
    return items


def _read_text(path: Path) -> str:
    # Bytes decoded by hand: read_text's newline translation would alter newlines inside quoted CSV fields.
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _item(url: str, label: Optional[str], source: str, meta: Optional[dict] = None) -> UrlItem:
    if not label:
        raise InputError(f"{source}: no class for {url!r} (expected 'URL CLASS', a class column, or a "
                            f"<class>.txt file name)")
    try:
        folder = safe_folder_name(label)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None
    if folder.lower() in RESERVED_NAMES:  # the reports live beside the class folders
        folder += "_"
    return UrlItem(url, label, folder, source, dict(meta or {}))


def _check_folder_collisions(items: Sequence[UrlItem]) -> None:
    # Two different class names must not end up in one folder (also not on a case-insensitive filesystem).
    owner: dict[str, str] = {}
    for it in items:
        other = owner.setdefault(it.folder.lower(), it.label)
        if other != it.label:
            raise InputError(f"{it.source}: classes {other!r} and {it.label!r} would share the folder "
                                f"{it.folder!r}; rename one of them")
    renamed = sorted({(it.label, it.folder) for it in items if it.label != it.folder})
    for label, folder in renamed[:10]:
        LOG.warning("class %r is saved in the folder %r", label, folder)
