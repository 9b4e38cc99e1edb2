"""report.html: one self-contained page to look at a model's predictions, written by ``predict.py --report`` and
at the end of a training run.

The page holds the metrics, the per-class table (sortable by clicking a header, or by the URL hash
``#sort=f1-asc``), the confusion matrix, the most confused class pairs, the worst errors (the most confident
wrong predictions) as thumbnails beside their attention heatmaps with the top-3 classes, and, for a training run,
the curves. Without labels it shows what can be known: how many images went to each class and the least
confident predictions.

Self-contained means one file that opens anywhere, offline, and can be mailed or archived:

* every picture is a ``data:`` URI (thumbnails downscaled to :data:`THUMB` px JPEG, plots PNG), at most
  :data:`MAX_ERRORS` of them in the gallery, so the page stays small (a few hundred kB);
* no ``<link>``, no ``<script src>``, no ``http`` URL; a Content-Security-Policy forbids any fetch, and allows
  only the page's own inline script (by its SHA-256), so even a slip in escaping could not run injected code;
* class names and paths are user data: every one goes through :func:`html.escape`, and none is put inside the
  script (the sort reads ``data-v`` attributes).

:func:`write_report` is the renderer only: arrays in, file out, written atomically; it runs no model. What needs the
model as well (the attention maps of the few gallery images, a training run's validation predictions) is in
:mod:`ws_dan.evaluation.prediction` (:func:`~ws_dan.evaluation.prediction.write_prediction_report`,
:func:`~ws_dan.evaluation.prediction.write_training_report`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ws_dan.common.io import PathLike, atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ws_dan.evaluation.metrics import Scores

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: Most images in the gallery (worst errors, or least confident predictions without labels).
MAX_ERRORS = 24
#: Most confused class pairs listed.
TOP_PAIRS = 10
#: Longest side of a gallery thumbnail (px).
THUMB = 160
#: Up to this many classes the confusion matrix carries its class names (ws_dan.evaluation.plots labels up to 40);
#: beyond, the page adds a labelled close-up of the classes of the most confused pairs, at most
#: :data:`CLOSE_UP` of them.
LABELLED_CLASSES = 40
CLOSE_UP = 30

# --------------------------------------------------------------------------------------------------------
# What the page shows, as plain functions (tested on their own)


def predicted_and_confidence(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's argmax class and its probability."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    return predicted, probabilities[np.arange(len(predicted)), predicted]


def worst_errors(probabilities: np.ndarray, targets: Sequence[int], limit: int = MAX_ERRORS) -> np.ndarray:
    """Rows of the wrong predictions, most confident first (ties: the earlier row), at most ``limit``.

    A confident mistake is the most telling one: a mislabelled image, two classes the model cannot tell apart,
    or a shortcut it learned; a wrong guess at 30% is just a hard image. Rows with target -1 (unknown) are left out.
    """
    targets = np.asarray(targets)
    predicted, confidence = predicted_and_confidence(probabilities)
    wrong = np.flatnonzero((targets >= 0) & (predicted != targets))
    return wrong[np.argsort(-confidence[wrong], kind="stable")][: max(int(limit), 0)]


def least_confident(probabilities: np.ndarray, limit: int = MAX_ERRORS) -> np.ndarray:
    """Rows by rising top-1 probability (ties: the earlier row), at most ``limit``: without labels, the images
    the model is least sure of are the ones worth a look."""
    _, confidence = predicted_and_confidence(probabilities)
    return np.argsort(confidence, kind="stable")[: max(int(limit), 0)]


def gallery_rows(probabilities: np.ndarray, targets: Optional[Sequence[int]] = None,
                 limit: int = MAX_ERRORS) -> np.ndarray:
    """The rows the gallery shows: :func:`worst_errors` with labels, else :func:`least_confident`."""
    if targets is None:
        return least_confident(probabilities, limit)
    return worst_errors(probabilities, targets, limit)


def confused_pairs(confusion: np.ndarray, limit: int = TOP_PAIRS) -> list[tuple[int, int, int]]:
    """``(true class, predicted class, count)`` of the largest off-diagonal cells of the confusion matrix,
    largest first (ties: lower true class, then lower predicted class), only cells with a count, at most
    ``limit``. A -> B and B -> A are separate pairs: confusions are often one-sided."""
    off = np.array(confusion, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")  # row-major flat order keeps the tie rule
    pairs = []
    for flat in order[: max(int(limit), 0)]:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] <= 0:
            break
        pairs.append((int(i), int(j), int(off[i, j])))
    return pairs


def close_up_classes(pairs: Sequence[tuple[int, int, int]], limit: int = CLOSE_UP) -> list[int]:
    """The classes of ``pairs`` in order of first appearance, at most ``limit``: the part of a large confusion
    matrix worth reading with names."""
    seen: list[int] = []
    for i, j, _ in pairs:
        for c in (i, j):
            if c not in seen and len(seen) < limit:
                seen.append(c)
    return seen


def sort_rows(rows: Sequence[Mapping[str, Any]], key: str, descending: bool = False) -> list[Mapping[str, Any]]:
    """The per-class table's order, as the page's script sorts it: by ``key`` (numbers numerically, text by
    case-insensitive comparison), ties always by the original row order whatever the direction."""
    indexed = list(enumerate(rows))
    numeric = all(isinstance(r[key], numbers.Real) and not isinstance(r[key], bool) for _, r in indexed)

    def value(item):
        v = item[1][key]
        return float(v) if numeric else str(v).lower()  # lower(), as the script's toLowerCase()

    # Two stable passes: first the tie order (row index, ascending), then the key in the asked direction.
    indexed.sort(key=lambda item: item[0])
    indexed.sort(key=value, reverse=descending)
    return [r for _, r in indexed]


def _final_training(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Epochs run and the best validation top-1 (with its epoch) from metrics.csv rows."""
    best, best_epoch, epochs = -math.inf, None, 0
    for r in rows:
        try:
            epoch = int(float(r.get("epoch", "nan")))
        except (TypeError, ValueError):
            continue
        epochs = max(epochs, epoch)
        try:
            top1 = float(r.get("val_top1", "nan"))
        except (TypeError, ValueError):
            continue
        if top1 > best:  # NaN never wins
            best, best_epoch = top1, epoch
    return {"epochs": epochs, "best_val_top1": best if best_epoch is not None else None, "best_epoch": best_epoch}


# --------------------------------------------------------------------------------------------------------
# Pictures as data URIs


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _jpeg_uri(image: Image.Image, quality: int = 85) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _png_uri(draw, *args, **kwargs) -> str:
    """Run a ws_dan.evaluation.plots function into memory and return its PNG as a data URI."""
    buf = io.BytesIO()
    draw(*args, buf, **kwargs)
    return _data_uri(buf.getvalue(), "image/png")


def _thumbnail(path: PathLike, size: int) -> Optional[Image.Image]:
    """The image (upright RGB, via the safe opener) shrunk to fit ``size`` x ``size``; None when unreadable."""
    from ws_dan.common.images import UnreadableImageError, open_image

    try:
        image = open_image(path)
    except (UnreadableImageError, OSError):
        return None
    image.thumbnail((size, size))
    return image


# --------------------------------------------------------------------------------------------------------
# The page

_E = html.escape  # quote=True by default: safe in text and in double-quoted attributes

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 12px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.n{text-align:right}
th.sortable{cursor:pointer;background:#f4f4f4;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.row>div{flex:1 1 440px;min-width:0}
.fig{overflow:auto}img.plot{max-width:100%;height:auto;cursor:zoom-in}img.plot.full{max-width:none;cursor:zoom-out}
h3{font-size:15px;margin:4px 0}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;width:332px}
.pair{display:flex;gap:4px;min-height:60px}.pair img{width:160px;height:auto;object-fit:contain}
.missing{width:160px;height:120px;background:#ccc;color:#555;display:flex;align-items:center;justify-content:center}
figcaption{font-size:12px}.path{color:#555;overflow-wrap:anywhere}
ol{margin:2px 0 0 18px;padding:0}li.hit{font-weight:bold;color:#075}.muted{color:#777}
"""

# Sorts every table.sortable by a header click or by the URL hash #sort=KEY-asc / #sort=KEY-desc (so a sorted view
# can be linked, and tested in a headless browser that cannot click). It reads only data-* attributes, never user
# text inside the script; ties keep the original row order (data-i), as sort_rows does.
_SCRIPT = """
(function () {
  function sortTable(table, key, dir) {
    var heads = table.tHead.rows[0].cells, col = -1;
    for (var i = 0; i < heads.length; i++) { if (heads[i].getAttribute("data-key") === key) { col = i; } }
    if (col < 0) { return false; }
    var numeric = heads[col].getAttribute("data-type") === "num";
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v"), c;
      if (numeric) { c = parseFloat(x) - parseFloat(y); }
      else { x = x.toLowerCase(); y = y.toLowerCase(); c = x < y ? -1 : (x > y ? 1 : 0); }
      if (c === 0) { return parseInt(a.getAttribute("data-i"), 10) - parseInt(b.getAttribute("data-i"), 10); }
      return dir === "desc" ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var j = 0; j < heads.length; j++) {
      heads[j].setAttribute("aria-sort", j === col ? (dir === "desc" ? "descending" : "ascending") : "none");
    }
    table.setAttribute("data-sorted", key + "-" + dir);
    return true;
  }
  function fromHash() {
    var m = /^#sort=([a-z0-9_]+)-(asc|desc)$/.exec(window.location.hash);
    if (!m) { return; }
    var tables = document.querySelectorAll("table.sortable");
    for (var i = 0; i < tables.length; i++) { sortTable(tables[i], m[1], m[2]); }
  }
  var tables = document.querySelectorAll("table.sortable");
  for (var t = 0; t < tables.length; t++) {
    (function (table) {
      var heads = table.tHead.rows[0].cells;
      for (var i = 0; i < heads.length; i++) {
        heads[i].addEventListener("click", function (ev) {
          var key = ev.currentTarget.getAttribute("data-key");
          var dir = ev.currentTarget.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
          if (sortTable(table, key, dir)) {
            // a linkable view; some browsers refuse replaceState on local files, and sorting is what matters
            try { history.replaceState(null, "", "#sort=" + key + "-" + dir); } catch (e) { }
          }
        });
      }
    })(tables[t]);
  }
  var plots = document.querySelectorAll("img.plot");  // a click shows a plot at full size (scrolls in its box)
  for (var k = 0; k < plots.length; k++) {
    plots[k].addEventListener("click", function (ev) { ev.currentTarget.classList.toggle("full"); });
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""


def _csp() -> str:
    """Content-Security-Policy: nothing may be fetched (images only from data: URIs), and only this module's own
    script may run, named by its hash."""
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _pct(value: Any) -> str:
    return f"{float(value):.2f}%"


def _num(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}"


def _cards(metrics: Mapping[str, Any], labelled: bool) -> str:
    cards = [("images", str(metrics.get("num_images", "")))]
    if metrics.get("skipped_images"):
        cards.append(("skipped (unreadable)", str(metrics["skipped_images"])))
    if labelled:
        cards += [(f"top-{k}", _pct(metrics[f"top{k}"])) for k in (1, 3, 5) if f"top{k}" in metrics]
        cards += [(f"macro {name}", _num(metrics[key])) for name, key in
                  [("precision", "precision_macro"), ("recall", "recall_macro"), ("F1", "f1_macro")] if key in metrics]
    out = ['<div class="cards" id="metrics">']
    out += [f'<div class="card"><b>{_E(v)}</b><span>{_E(k)}</span></div>' for k, v in cards]
    out.append("</div>")
    return "\n".join(out)


_CARD_KEYS = {"num_images", "skipped_images", "top1", "top3", "top5", "precision_macro", "recall_macro", "f1_macro"}


def _details(metrics: Mapping[str, Any]) -> str:
    """The other entries of metrics.json (checkpoint, data folder, super-resolution...) as a two-column table."""
    rest = [(k, v) for k, v in metrics.items() if k not in _CARD_KEYS]
    if not rest:
        return ""
    lines = ['<table class="kv" id="details">']
    for k, v in rest:
        text = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        lines.append(f"<tr><td>{_E(str(k))}</td><td>{_E(text)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _sortable_table(table_id: str, columns: Sequence[tuple[str, str, str]], rows: Sequence[Mapping[str, Any]],
                    formats: Mapping[str, Any]) -> str:
    """``columns``: (key, heading, "num" | "text"). Each cell carries its raw value in data-v (what the script
    sorts by) and shows it formatted; each row carries its original position in data-i (the tie order)."""
    head = "".join(f'<th class="sortable{" n" if t == "num" else ""}" data-key="{_E(k)}" data-type="{t}" '
                   f'title="click to sort">{_E(h)}</th>' for k, h, t in columns)
    out = [f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>']
    for row in rows:
        cells = []
        for key, _, kind in columns:
            v = row[key]
            raw = repr(float(v)) if kind == "num" else str(v)
            shown = formats[key](v) if key in formats else str(v)
            align = ' class="n"' if kind == "num" else ""
            cells.append(f'<td{align} data-v="{_E(raw)}">{_E(shown)}</td>')
        out.append(f'<tr data-i="{row["_i"]}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _per_class_section(per_class: Sequence[Mapping[str, Any]]) -> str:
    """Classes in rising F1 (worst first: where to look), sortable by any column."""
    indexed = [{**r, "_i": i} for i, r in enumerate(per_class)]
    rows = sort_rows(indexed, "f1")
    columns = [("class", "class", "text"), ("support", "images", "num"), ("correct", "correct", "num"),
               ("precision", "precision", "num"), ("recall", "recall", "num"), ("f1", "F1", "num")]
    fmt = {"support": lambda v: str(int(v)), "correct": lambda v: str(int(v)), "precision": _num, "recall": _num,
           "f1": _num}
    table = _sortable_table("per-class", columns, rows, fmt)
    return ('<h2 id="per-class-heading">Per class</h2>\n<p class="muted">Worst F1 first; click a heading to sort '
            "(or open the page with #sort=f1-desc).</p>\n" + f'<div class="scroll">{table}</div>')


def _predicted_classes_section(probabilities: np.ndarray, class_names: Sequence[str]) -> str:
    """Without labels: how many images went to each class, and how sure the model was of them."""
    predicted, confidence = predicted_and_confidence(probabilities)
    rows = []
    for c, name in enumerate(class_names):
        mask = predicted == c
        if mask.any():
            rows.append({"class": name, "images": int(mask.sum()), "confidence": float(confidence[mask].mean()),
                         "_i": c})
    rows = sort_rows(rows, "images", descending=True)
    columns = [("class", "predicted class", "text"), ("images", "images", "num"),
               ("confidence", "mean confidence", "num")]
    table = _sortable_table("predicted-classes", columns, rows,
                            {"images": lambda v: str(int(v)), "confidence": _num})
    return ('<h2 id="predicted-classes-heading">Predicted classes</h2>\n<p class="muted">No labels: what the model '
            "predicted, most frequent first; click a heading to sort.</p>\n" + f'<div class="scroll">{table}</div>')


def _confusion_section(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    from ws_dan.evaluation.plots import plot_confusion_matrix

    pairs = confused_pairs(confusion)
    parts = ['<h2 id="confusion-heading">Confusion matrix</h2>',
             '<p class="muted">Rows: true class, columns: predicted; each row normalised by the true class\'s '
             "images. Click a plot for its full size.</p>"]
    uri = _png_uri(plot_confusion_matrix, confusion, list(class_names))
    side = ['<h3 id="pairs-heading">Most confused pairs</h3>']
    if not pairs:
        side.append('<p id="pairs">No image was predicted as another class.</p>')
    else:
        support = confusion.sum(axis=1)
        side.append('<table id="pairs"><thead><tr><th>true class</th><th>predicted as</th><th class="n">images</th>'
                    '<th class="n">of the true class</th></tr></thead><tbody>')
        for i, j, count in pairs:
            share = count / support[i] if support[i] else 0.0
            side.append(f'<tr><td>{_E(class_names[i])}</td><td>{_E(class_names[j])}</td><td class="n">{count}</td>'
                        f'<td class="n">{share:.0%}</td></tr>')
        side.append("</tbody></table>")
    # The matrix beside the pairs that explain it (one column on a narrow window).
    parts.append(f'<div class="row"><div class="fig"><img class="plot" id="confusion-matrix" alt="confusion matrix" '
                 f'src="{uri}"></div><div>{"".join(side)}</div></div>')
    if len(class_names) > LABELLED_CLASSES and pairs:
        # 196 names do not fit in one plot: a labelled close-up of the classes of the most confused pairs.
        subset = close_up_classes(pairs)
        uri = _png_uri(plot_confusion_matrix, confusion, list(class_names), subset=subset,
                       title=f"the {len(subset)} classes of the most confused pairs")
        parts.append(f'<div class="fig"><img class="plot" id="confusion-close-up" alt="confusion matrix close-up" '
                     f'src="{uri}"></div>')
    return "\n".join(parts)


def _heatmap_uri(row: int, image: Optional[Image.Image], attention: Mapping[int, np.ndarray],
                 heatmaps: Mapping[int, PathLike], size: int) -> Optional[str]:
    """The attention overlay of a gallery image: drawn from its map on the thumbnail, else the heatmap file
    predict.py wrote (shrunk), else None."""
    from ws_dan.evaluation.plots import attention_overlay

    if row in attention and image is not None:
        return _jpeg_uri(attention_overlay(image, attention[row]))
    if row in heatmaps:
        shown = _thumbnail(heatmaps[row], 2 * size)
        if shown is not None:
            return _jpeg_uri(shown)
    return None


def _gallery_section(rows: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                     images: Sequence[PathLike], shown: Sequence[str], targets: Optional[np.ndarray],
                     attention: Mapping[int, np.ndarray], heatmaps: Mapping[int, PathLike], size: int) -> str:
    from ws_dan.evaluation.metrics import rank_classes

    if targets is not None:
        heading = ('<h2 id="errors-heading">Worst errors</h2>\n<p class="muted">The most confident wrong '
                   "predictions: the image, its attention heatmap, the true class and the top-3.</p>")
        if not len(rows):
            return heading + '\n<p id="errors">No wrong prediction.</p>'
    else:
        heading = ('<h2 id="errors-heading">Least confident predictions</h2>\n<p class="muted">No labels: the '
                   "images the model is least sure of, with their attention heatmaps and top-3.</p>")
    top = rank_classes(probabilities[np.asarray(rows, dtype=int)], 3) if len(rows) else np.zeros((0, 3), int)
    cards = []
    for r, order in zip(rows, top):
        r = int(r)
        image = _thumbnail(images[r], size)
        pics = []
        if image is None:
            pics.append('<div class="missing">unreadable now</div>')
        else:
            pics.append(f'<img alt="image" src="{_jpeg_uri(image)}">')
        heat = _heatmap_uri(r, image, attention, heatmaps, size)
        if heat is not None:
            pics.append(f'<img alt="attention heatmap" src="{heat}">')
        caption = [f'<div class="path" title="{_E(str(images[r]))}">{_E(shown[r])}</div>']
        if targets is not None:
            caption.append(f'<div>true: <b class="true">{_E(class_names[int(targets[r])])}</b></div>')
        items = []
        for c in order:
            hit = targets is not None and int(c) == int(targets[r])
            mark = ' class="hit"' if hit else ""
            items.append(f"<li{mark}>{_E(class_names[int(c)])} {probabilities[r, int(c)]:.1%}</li>")
        caption.append('<ol class="top">' + "".join(items) + "</ol>")
        cards.append(f'<figure data-row="{r}"><div class="pair">{"".join(pics)}</div>'
                     f'<figcaption>{"".join(caption)}</figcaption></figure>')
    return heading + '\n<div class="gallery" id="errors">\n' + "\n".join(cards) + "\n</div>"


def _training_section(rows: Sequence[Mapping[str, Any]]) -> str:
    from ws_dan.evaluation.plots import plot_curves

    final = _final_training(rows)
    text = f"{final['epochs']} epoch(s)"
    if final["best_val_top1"] is not None:
        text += f"; best validation top-1 {final['best_val_top1']:.2f}% at epoch {final['best_epoch']}"
    uri = _png_uri(plot_curves, list(rows))
    return (f'<h2 id="training-heading">Training</h2>\n<p id="training">{_E(text)}</p>\n'
            f'<img class="plot" id="curves" alt="training curves" src="{uri}">')


def write_report(
    path: PathLike,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    images: Sequence[PathLike],
    targets: Optional[Sequence[int]] = None,
    *,
    shown: Optional[Sequence[str]] = None,
    scores: Optional[Scores] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    attention: Optional[Mapping[int, np.ndarray]] = None,
    heatmaps: Optional[Mapping[int, PathLike]] = None,
    training_rows: Optional[Sequence[Mapping[str, Any]]] = None,
    title: str = "WS-DAN predictions",
    max_errors: int = MAX_ERRORS,
    thumb: int = THUMB,
) -> Path:
    """Write the self-contained report page to ``path`` (atomically) and return it.

    ``probabilities`` (N, K) and ``images`` (N paths, opened for the gallery thumbnails) are row for row;
    ``targets`` (N class indices) makes it a labelled report: metrics, per-class table, confusion matrix, most
    confused pairs and worst errors (``scores``, ws_dan.evaluation.metrics' classification scores, are computed from
    them when not given). Without ``targets``: counts per predicted class and the least confident predictions.
    ``shown``: the path text to print per image (e.g. relative to the data folder; default ``images``);
    ``metrics``: metrics.json's content (default: the scores' summary and the image count);
    ``attention``: row -> attention map (any size) for the gallery rows; ``heatmaps``: row -> a heatmap PNG
    predict.py wrote, used where a row has no map; ``training_rows``: metrics.csv rows, adding the curves.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    n = len(probabilities)
    _check_rows(probabilities, class_names, images, shown)
    shown = [str(p) for p in (shown if shown is not None else images)]
    target_array = None if targets is None else np.asarray(targets, dtype=np.int64)
    labelled = target_array is not None and n > 0
    if labelled and scores is None:
        from ws_dan.evaluation.metrics import classification_scores

        scores = classification_scores(target_array, probabilities, class_names)
    if metrics is None:
        metrics = {"num_images": n, **(scores.summary if labelled else {})}

    body = [f"<h1>{_E(title)}</h1>", _cards(metrics, labelled), _details(metrics)]
    if training_rows:
        body.append(_training_section(training_rows))
    if labelled:
        body.append(_per_class_section(scores.per_class))
        body.append(_confusion_section(scores.confusion, class_names))
    elif n:
        body.append(_predicted_classes_section(probabilities, class_names))
    if n:
        rows = gallery_rows(probabilities, target_array if labelled else None, max_errors)
        body.append(_gallery_section(rows, probabilities, class_names, images, shown,
                                     target_array if labelled else None, attention or {}, heatmaps or {}, thumb))
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(title, body))
    log.info("report: %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path


def _check_rows(probabilities: np.ndarray, class_names: Sequence[str], images: Sequence[PathLike],
                shown: Optional[Sequence[str]]) -> None:
    """One row of probabilities per image (and per shown path), one column per class."""
    n = len(probabilities)
    if len(images) != n or (shown is not None and len(shown) != n):
        raise ValueError(f"report: {n} rows of probabilities but {len(images)} images"
                         f"{'' if shown is None else f' and {len(shown)} shown paths'}")
    if probabilities.ndim != 2 or probabilities.shape[1] != len(class_names):
        raise ValueError(f"report: probabilities of shape {probabilities.shape} for {len(class_names)} classes")


def _page(title: str, body: Sequence[str]) -> str:
    """The document around the sections: the CSP that forbids every fetch, the style, the sort script."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_E(_csp())}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_E(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        *[part for part in body if part],
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
        "",
    ])
