"""The one contact-sheet renderer: a PNG grid of thumbnails with captions, to check images by eye.

Used by the duplicate finder (one row per group, keeper first) and the cleaner (the images it would remove).
A row may start with a short label (a group id; red when flagged). Images that fail to open show as grey
tiles, so one bad file never stops a report. The PNG is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ws_dan.common.io import PathLike, atomic_write

#: One tile: (image path, caption lines). Up to three caption lines; the first is dark, the others grey.
Tile = tuple[PathLike, Sequence[str]]


def contact_sheet(rows: Sequence[Sequence[Tile]], path: PathLike, thumb: int = 112,
                  row_labels: Optional[Sequence[tuple[str, bool]]] = None, caption_lines: int = 2,
                  chars: int = 19) -> Optional[Path]:
    """Render ``rows`` of tiles to the PNG ``path``; returns the path, or None when there is no tile.

    ``row_labels``: per row, ``(text, flagged)`` drawn in a 40-pixel column on the left (flagged: red).
    Captions longer than ``chars`` characters are shortened in the middle (``abc~xyz``).
    """
    from PIL import Image, ImageDraw

    from ws_dan.common.images import UnreadableImageError, open_image

    rows = [list(r) for r in rows if r]
    if not rows:
        return None
    label_h, pad = 4 + 12 * caption_lines, 6
    left = 40 if row_labels is not None else 0
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (pad + left + cols * (thumb + pad), pad + len(rows) * (thumb + label_h + pad)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for r, tiles in enumerate(rows):
        y = pad + r * (thumb + label_h + pad)
        if row_labels is not None:
            text, flagged = row_labels[r]
            draw.text((4, y + thumb // 2), text, fill=(200, 0, 0) if flagged else (0, 0, 0))
        for c, (img_path, caption) in enumerate(tiles):
            x = pad + left + c * (thumb + pad)
            try:
                im = open_image(img_path)
                im.thumbnail((thumb, thumb))
            except (UnreadableImageError, OSError):
                im = Image.new("RGB", (thumb, thumb), (160, 160, 160))
            sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
            for line, text in enumerate(list(caption)[:caption_lines]):
                draw.text((x, y + thumb + 2 + 12 * line), shorten(text, chars),
                          fill=(0, 0, 0) if line == 0 else (90, 90, 90))
    with atomic_write(path, "wb") as f:
        sheet.save(f, format="PNG")
    return Path(path)


def shorten(text: str, n: int = 19) -> str:
    """``text`` cut to ``n`` characters in the middle (``abc~xyz``), keeping both ends readable."""
    return text if len(text) <= n else text[: n // 2 - 1] + "~" + text[-(n // 2):]
