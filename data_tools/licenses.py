"""Image licences: the attribution columns every tool carries, licence codes, and the ``--license`` filter.

A search row (``urls.csv``), a download manifest row and an ``ATTRIBUTION.csv`` row carry the same columns,
:data:`LICENSE_FIELDS`, so a licence found at search time reaches the merged training split unchanged.

Licences are normalised to Openverse's short codes (``cc0``, ``pdm``, ``by``, ``by-sa``, ``by-nc``, ``by-nd``,
``by-nc-sa``, ``by-nc-nd``, ...), whatever the source spells ("CC BY-SA 4.0", "cc-by-sa-4.0", "Public domain").
The filter accepts codes and two groups, as Openverse's ``license_type`` does:

* ``commercial``: licences that allow commercial use (cc0, pdm, by, by-sa, by-nd);
* ``modification``: licences that allow derivatives (cc0, pdm, by, by-sa, by-nc, by-nc-sa);
* ``open`` (the default): both at once, cc0, pdm, by, by-sa: the "free cultural works" licences. A model
  trained on them, and the images themselves, may be shared and used by anyone, commercially too, as long as the
  attribution (kept in ``ATTRIBUTION.csv``) is given and, for by-sa, shared copies keep the licence;
* ``all``: no filter (non-commercial and no-derivatives images too: for research use only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

from ws_dan.common.io import InputError

#: Columns a search row, a download manifest row and an ATTRIBUTION.csv row carry about an image's origin.
LICENSE_FIELDS = ("source", "license", "license_version", "license_url", "creator", "attribution", "landing_url")

CODES = ("cc0", "pdm", "by", "by-sa", "by-nc", "by-nd", "by-nc-sa", "by-nc-nd", "sampling+", "nc-sampling+")
GROUPS = {
    "commercial": ("cc0", "pdm", "by", "by-sa", "by-nd"),
    "modification": ("cc0", "pdm", "by", "by-sa", "by-nc", "by-nc-sa", "sampling+", "nc-sampling+"),
    "open": ("cc0", "pdm", "by", "by-sa"),
}
DEFAULT_FILTER = "open"

_CC = re.compile(r"\b(?:cc[\s_-]*)?(by(?:[\s_-]*(?:nc|sa|nd)){0,2})(?:[\s_-]*(\d(?:\.\d)?))?", re.IGNORECASE)


def normalise_license(text: Optional[str]) -> tuple[str, str]:
    """``(code, version)`` for a licence as a source spells it; ``("", "")`` when it is not recognised.

    >>> normalise_license("CC BY-SA 4.0")
    ('by-sa', '4.0')
    """
    t = " ".join(str(text or "").strip().lower().replace("_", "-").split())
    if not t:
        return "", ""
    if t in ("pdm", "public domain", "pd", "public-domain", "publicdomain", "public domain mark") \
            or t.startswith(("pd-", "public domain")):
        return "pdm", ""
    if t.startswith(("cc0", "cc-zero", "cc zero")):
        return "cc0", "1.0"
    m = _CC.search(t)
    if m and (t.startswith(("cc", "by", "creative commons")) or "creativecommons" in t):
        code = re.sub(r"[\s_-]+", "-", m.group(1))
        if code in CODES:
            return code, m.group(2) or ""
    if t in CODES:
        return t, ""
    return "", ""


def parse_license_filter(values: Optional[Iterable[str]]) -> Optional[tuple[str, ...]]:
    """The licence codes ``--license`` keeps (codes and groups, comma- or space-separated); None for ``all``."""
    wanted: list[str] = []
    for value in values or [DEFAULT_FILTER]:
        for part in re.split(r"[,\s]+", str(value).strip().lower()):
            if not part:
                continue
            if part == "all":
                return None
            if part in GROUPS:
                wanted += [c for c in GROUPS[part] if c not in wanted]
            elif part in CODES:
                if part not in wanted:
                    wanted.append(part)
            else:
                raise InputError(f"--license {part!r}: expected a licence code ({', '.join(CODES)}), a group "
                                    f"({', '.join(GROUPS)}) or 'all'")
    if not wanted:
        raise InputError("--license: no licence given")
    return tuple(wanted)
