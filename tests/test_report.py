"""report.html (ws_dan.evaluation.html_report, predict.py --report): what the page holds, checked on the parsed HTML
(tables, escaping of user data, no network reference, pictures that decode), written atomically, and opened in a real
headless Chromium (screenshot not blank, the sort script ran) where one is installed."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_script
from PIL import Image

from ws_dan.evaluation.html_report import (
    MAX_ERRORS,
    REPORT_FILE,
    close_up_classes,
    confused_pairs,
    least_confident,
    sort_rows,
    worst_errors,
    write_report,
)
from ws_dan.evaluation.prediction import write_training_report
from ws_dan.models.checkpoint import save_checkpoint
from ws_dan.models.wsdan import WSDAN, ModelConfig

# --------------------------------------------------------------------------------------------------------
# A small DOM from html.parser, to query the page like a browser would


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str, **attrs) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and all(n.attrs.get(k) == v for k, v in attrs.items())]

    def find(self, tag: str, **attrs) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}>"
        return found[0]

    def by_id(self, id_: str):
        found = [n for n in self.iter() if n.attrs.get("id") == id_]
        return found[0] if found else None


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:  # a stray end tag is ignored, as browsers do
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(path) -> Node:
    b = _Builder()
    b.feed(Path(path).read_text(encoding="utf-8"))
    b.close()
    return b.root


def decode_data_uri(uri: str) -> Image.Image:
    m = re.fullmatch(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    image = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    image.load()
    assert image.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[m.group(1)]
    return image


def table_rows(table: Node) -> list[list[Node]]:
    return [tr.find_all("td") for tr in table.find("tbody").find_all("tr")]


def _cards(doc: Node) -> dict[str, str]:
    cards = doc.by_id("metrics").find_all("div", **{"class": "card"})
    return {c.find("span").text(): c.find("b").text() for c in cards}


def assert_offline(path) -> None:
    """No <link>, no <script src>, nothing that fetches: every src/href is a data: URI, no URL outside them."""
    doc = parse(path)
    assert not doc.find_all("link") and not doc.find_all("iframe") and not doc.find_all("object")
    for node in doc.iter():
        for key in ("src", "href", "srcset", "action", "poster", "data"):
            if key in node.attrs:
                assert node.attrs[key].startswith("data:image/"), (node.tag, key, node.attrs[key][:40])
    without_data = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", Path(path).read_text(encoding="utf-8"))
    for ref in ("http:", "https:", "//", "url(", "@import", "ftp:", "file:"):
        if ref == "//":  # the inline script has comments; what matters is no protocol-relative URL in attributes
            assert not re.search(r"""(src|href)\s*=\s*["']?//""", without_data)
        else:
            assert ref not in without_data, ref


# --------------------------------------------------------------------------------------------------------
# The selections, on values worked out by hand


def test_worst_errors_are_the_most_confident_wrong_predictions():
    p = np.array([[0.9, 0.1, 0.0],   # row 0: predicts 0, true 0 -> right
                  [0.2, 0.7, 0.1],   # row 1: predicts 1, true 0 -> wrong at 0.7
                  [0.05, 0.05, 0.9],  # row 2: predicts 2, true 1 -> wrong at 0.9
                  [0.1, 0.7, 0.2],   # row 3: predicts 1, true 2 -> wrong at 0.7 (tie with row 1: later)
                  [0.6, 0.3, 0.1]])  # row 4: predicts 0, unknown label -> left out
    t = np.array([0, 0, 1, 2, -1])
    assert worst_errors(p, t).tolist() == [2, 1, 3]
    assert worst_errors(p, t, limit=2).tolist() == [2, 1]
    assert worst_errors(p, np.array([0, 1, 2, 1, 0])).tolist() == []
    assert least_confident(p, 2).tolist() == [4, 1]


def test_confused_pairs_are_the_largest_off_diagonal_cells():
    cm = np.array([[5, 3, 0, 1],
                   [0, 9, 0, 0],
                   [3, 2, 7, 0],
                   [0, 0, 1, 4]])
    assert confused_pairs(cm) == [(0, 1, 3), (2, 0, 3), (2, 1, 2), (0, 3, 1), (3, 2, 1)]
    assert confused_pairs(cm, limit=2) == [(0, 1, 3), (2, 0, 3)]
    assert confused_pairs(np.diag([3, 4])) == []
    assert close_up_classes(confused_pairs(cm), limit=3) == [0, 1, 2]


def test_sort_rows_orders_numbers_and_text_and_keeps_ties_in_row_order():
    rows = [{"class": "b", "f1": 0.5}, {"class": "A", "f1": 0.2}, {"class": "c", "f1": 0.5}, {"class": "a", "f1": 0.2}]
    assert [r["class"] for r in sort_rows(rows, "f1")] == ["A", "a", "b", "c"]
    assert [r["class"] for r in sort_rows(rows, "f1", descending=True)] == ["b", "c", "A", "a"]
    assert [r["class"] for r in sort_rows(rows, "class")] == ["A", "a", "b", "c"]
    assert [r["class"] for r in sort_rows(rows, "class", descending=True)] == ["c", "b", "A", "a"]


# --------------------------------------------------------------------------------------------------------
# The page, from arrays


def _photos(folder: Path, n: int, size=(48, 40), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _case(n: int = 30, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = rng.integers(0, k, n)
    return p.astype(np.float32), targets


HOSTILE = '<script>alert("x")</script>'


def test_labelled_report_tables_gallery_and_pictures(tmp_path):
    from ws_dan.evaluation.metrics import classification_scores

    names = ["Audi TT 2011", HOSTILE, "a & b", "Zeta"]
    p, t = _case()
    images = _photos(tmp_path / "img", len(p), size=(400, 300))
    attention = {r: np.random.default_rng(r).random((7, 7)) for r in range(len(p))}
    out = write_report(tmp_path / "r" / REPORT_FILE, p, names, images, t, attention=attention,
                       metrics={"num_images": 30, "skipped_images": 2, "top1": 25.0, "f1_macro": 0.2,
                                "checkpoint": "best.pt"})
    assert out == tmp_path / "r" / REPORT_FILE
    assert [f.name for f in out.parent.iterdir()] == [REPORT_FILE]  # no temporary file left beside it
    doc = parse(out)
    report = classification_scores(t, p, names)

    # metrics cards and the details table
    cards = _cards(doc)
    assert cards == {"images": "30", "skipped (unreadable)": "2", "top-1": "25.00%", "macro F1": "0.2000"}
    assert [[td.text() for td in tr.find_all("td")] for tr in doc.by_id("details").find_all("tr")] == \
        [["checkpoint", "best.pt"]]

    # per-class table: one row per class, in rising F1 (ties: class order), each cell's raw value in data-v
    table = doc.by_id("per-class")
    assert [th.attrs["data-key"] for th in table.find_all("th")] == ["class", "support", "correct", "precision",
                                                                     "recall", "f1"]
    expected = sorted(range(4), key=lambda i: (report.per_class[i]["f1"], i))
    rows = table_rows(table)
    assert [int(tr.attrs["data-i"]) for tr in table.find("tbody").find_all("tr")] == expected
    for cells, i in zip(rows, expected):
        pc = report.per_class[i]
        assert cells[0].text() == names[i] and cells[0].attrs["data-v"] == names[i]
        assert [int(float(c.attrs["data-v"])) for c in cells[1:3]] == [pc["support"], pc["correct"]]
        assert [float(c.attrs["data-v"]) for c in cells[3:]] == pytest.approx([pc["precision"], pc["recall"],
                                                                             pc["f1"]])
        assert cells[5].text() == f"{pc['f1']:.4f}"

    # most confused pairs: the off-diagonal counts, largest first
    pairs = [[td.text() for td in tr] for tr in table_rows(doc.by_id("pairs"))]
    assert pairs == [[names[i], names[j], str(c), f"{c / report.confusion[i].sum():.0%}"]
                     for i, j, c in confused_pairs(report.confusion)]
    assert 0 < len(pairs) <= 10

    # confusion matrix: a PNG (4 classes: no close-up)
    assert decode_data_uri(doc.by_id("confusion-matrix").attrs["src"]).size[0] > 200
    assert doc.by_id("confusion-close-up") is None

    # worst errors: most confident wrong first, thumbnail (<= 160 px JPEG) + heatmap, true class, top-3
    figures = doc.by_id("errors").find_all("figure")
    wrong = worst_errors(p, t)
    assert [int(f.attrs["data-row"]) for f in figures] == wrong.tolist() and len(wrong) > 3
    for fig in figures:
        r = int(fig.attrs["data-row"])
        thumb, heat = [decode_data_uri(img.attrs["src"]) for img in fig.find_all("img")]
        assert thumb.format == heat.format == "JPEG" and max(thumb.size) == 160 and thumb.size == heat.size
        assert fig.find("div", **{"class": "path"}).text() == str(images[r])
        assert fig.find("b", **{"class": "true"}).text() == names[t[r]]
        top = np.argsort(-p[r], kind="stable")[:3]
        assert [li.text() for li in fig.find_all("li")] == [f"{names[c]} {p[r, c]:.1%}" for c in top]
        assert [li.attrs.get("class") == "hit" for li in fig.find_all("li")] == [c == t[r] for c in top]
    assert doc.by_id("curves") is None  # no training rows given
    assert_offline(out)


def test_user_data_is_escaped_and_only_the_pages_own_script_runs(tmp_path):
    names = [HOSTILE, "<img src=x onerror=alert(1)>", 'quote" onmouseover="alert(2)', "&amp;"]
    p, t = _case(12, 4, seed=3)
    images = _photos(tmp_path / "i", len(p))
    shown = [f'"><script>alert({i})</script>.png' for i in range(len(p))]
    out = write_report(tmp_path / REPORT_FILE, p, names, images, t, shown=shown, title="<b>run</b>")
    doc = parse(out)
    scripts = doc.find_all("script")
    assert len(scripts) == 1 and "alert" not in scripts[0].text() and not scripts[0].attrs
    assert all(img.attrs["src"].startswith("data:image/") for img in doc.find_all("img"))
    assert not [n for n in doc.iter() if any(k.startswith("on") for k in n.attrs)]  # no event handler attribute
    assert all(b.text() != "run" for b in doc.find_all("b"))  # the title's markup stayed text
    assert doc.find("title").text() == "<b>run</b>" and doc.find("h1").text() == "<b>run</b>"
    cells = [tr[0].text() for tr in table_rows(doc.by_id("per-class"))]
    assert sorted(cells) == sorted(names)  # shown as text, character for character
    paths = {f.find("div", **{"class": "path"}).text() for f in doc.by_id("errors").find_all("figure")}
    assert paths and paths <= set(shown)
    csp = doc.find("meta", **{"http-equiv": "Content-Security-Policy"}).attrs["content"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split(
        "script-src")[1]
    assert_offline(out)


def test_unlabelled_report_has_no_accuracy_parts(tmp_path):
    names = ["a", "b", "c"]
    p, _ = _case(10, 3, seed=1)
    images = _photos(tmp_path / "i", len(p))
    out = write_report(tmp_path / REPORT_FILE, p, names, images)
    doc = parse(out)
    for gone in ("per-class", "confusion-matrix", "pairs"):
        assert doc.by_id(gone) is None, gone
    text = doc.find("body").text()
    assert "top-1" not in text and "Worst errors" not in text and "true:" not in text
    cards = _cards(doc)
    assert cards == {"images": "10"}
    predicted = p.argmax(1)
    rows = [[td.text() for td in tr] for tr in table_rows(doc.by_id("predicted-classes"))]
    counts = {names[c]: int((predicted == c).sum()) for c in range(3) if (predicted == c).any()}
    assert {r[0]: int(r[1]) for r in rows} == counts
    assert [int(r[1]) for r in rows] == sorted(counts.values(), reverse=True)
    figures = doc.by_id("errors").find_all("figure")
    assert [int(f.attrs["data-row"]) for f in figures] == np.argsort(p.max(1), kind="stable").tolist()
    assert all(len(f.find_all("img")) == 1 for f in figures)  # no attention given: the thumbnail alone
    assert_offline(out)


def test_training_rows_add_the_curves_and_the_best_epoch(tmp_path):
    names = ["a", "b"]
    p, t = _case(6, 2, seed=2)
    rows = [{"epoch": str(e), "train_loss": str(2 - 0.1 * e), "val_loss": str(2.1 - 0.1 * e), "val_top1": str(v),
             "train_raw_top1": "50", "lr": "0.001"} for e, v in [(1, 40.0), (2, 55.5), (3, 50.0)]]
    out = write_report(tmp_path / REPORT_FILE, p, names, _photos(tmp_path / "i", 6), t, training_rows=rows)
    doc = parse(out)
    assert decode_data_uri(doc.by_id("curves").attrs["src"]).format == "PNG"
    assert doc.by_id("training").text() == "3 epoch(s); best validation top-1 55.50% at epoch 2"


def test_many_classes_get_a_labelled_close_up_and_the_gallery_is_capped(tmp_path):
    k = 50
    names = [f"class {i:02d}" for i in range(k)]
    p, t = _case(120, k, seed=4)
    images = _photos(tmp_path / "i", 120, size=(64, 48))
    out = write_report(tmp_path / REPORT_FILE, p, names, images, t)
    doc = parse(out)
    close = decode_data_uri(doc.by_id("confusion-close-up").attrs["src"])
    assert close.format == "PNG" and decode_data_uri(doc.by_id("confusion-matrix").attrs["src"]).format == "PNG"
    assert len(doc.by_id("errors").find_all("figure")) == MAX_ERRORS < len(worst_errors(p, t, limit=1000))
    assert len(table_rows(doc.by_id("pairs"))) == 10 and len(table_rows(doc.by_id("per-class"))) == k
    assert out.stat().st_size < 1_500_000


def test_unreadable_images_and_heatmap_files(tmp_path):
    names = ["a", "b"]
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], np.float32)
    t = np.array([1, 0, 1])
    images = _photos(tmp_path / "i", 3)
    images[0].write_bytes(b"not an image")
    heat = _photos(tmp_path / "h", 1, size=(300, 160))[0]
    out = write_report(tmp_path / REPORT_FILE, p, names, images, t, heatmaps={1: heat})
    figs = {int(f.attrs["data-row"]): f for f in parse(out).by_id("errors").find_all("figure")}
    assert sorted(figs) == [0, 1, 2]
    assert figs[0].find("div", **{"class": "missing"}).text() == "unreadable now" and not figs[0].find_all("img")
    assert [decode_data_uri(i.attrs["src"]).size for i in figs[1].find_all("img")] == [(48, 40), (300, 160)]
    assert len(figs[2].find_all("img")) == 1


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(tmp_path, monkeypatch):
    import ws_dan.evaluation.plots

    names = ["a", "b"]
    p, t = _case(6, 2, seed=5)
    images = _photos(tmp_path / "i", 6)
    old = tmp_path / "out" / REPORT_FILE
    old.parent.mkdir()
    old.write_text("old report")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ws_dan.evaluation.plots, "plot_confusion_matrix", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(old, p, names, images, t)
    assert old.read_text() == "old report" and [f.name for f in old.parent.iterdir()] == [REPORT_FILE]


def test_mismatched_inputs_are_refused_with_one_line(tmp_path):
    p, t = _case(4, 3)
    with pytest.raises(ValueError, match=r"^report: 4 rows of probabilities but 3 images$"):
        write_report(tmp_path / REPORT_FILE, p, ["a", "b", "c"], ["x"] * 3, t)
    with pytest.raises(ValueError, match=r"^report: probabilities of shape \(4, 3\) for 2 classes$"):
        write_report(tmp_path / REPORT_FILE, p, ["a", "b"], ["x"] * 4, t)
    assert not (tmp_path / REPORT_FILE).exists()


# --------------------------------------------------------------------------------------------------------
# predict.py --report and the training hook, on an untrained tiny model


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory):
    """test/<class>/ with class folder names a browser would misread if they were not escaped."""
    from data_tools.synthetic import make_sample_dataset

    root = tmp_path_factory.mktemp("rep") / "data"
    make_sample_dataset(root, num_classes=3, train_per_class=1, test_per_class=4, image_size=64, seed=2)
    test = root / "test"
    names = ["<img src=x onerror=alert(1)>", "a & b", "plain"]
    for old, new in zip(sorted(p.name for p in test.iterdir()), names):
        (test / old).rename(test / new)
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, class_names=sorted(names), num_attentions=4,
                              image_size=32))
    ckpt = root.parent / "tiny.pt"
    save_checkpoint(ckpt, {"config": model.config.to_dict(), "model": model.state_dict()})
    return test, ckpt, sorted(names)


def _predict(data, ckpt, out, *extra):
    return run_script("predict", ["--dd", str(data), "--cp", str(ckpt), "--od", str(out), "-j", "0",
                                  "--no-progress", "--device", "cpu", *extra])


def test_predict_report_end_to_end(hostile_data, tmp_path):
    data, ckpt, names = hostile_data
    out = tmp_path / "pred"
    _predict(data, ckpt, out, "--report")
    doc = parse(out / REPORT_FILE)
    with open(out / "per_class.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    with open(out / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    table = {tr[0].text(): float(tr[5].attrs["data-v"]) for tr in table_rows(doc.by_id("per-class"))}
    assert table == pytest.approx({r["class"]: float(r["f1"]) for r in per_class}) and set(table) == set(names)
    wrong = [r for r in predictions if r["label"] != r["predicted"]]
    figures = doc.by_id("errors").find_all("figure")
    assert len(figures) == min(len(wrong), MAX_ERRORS) > 0
    by_image = {r["image"]: r for r in predictions}
    for fig in figures:
        row = by_image[fig.find("div", **{"class": "path"}).text()]  # the path as predictions.csv shows it
        assert fig.find("b", **{"class": "true"}).text() == row["label"]
        assert fig.find("li").text() == f"{row['top1_class']} {float(row['top1_prob']):.1%}"
        pics = [decode_data_uri(i.attrs["src"]) for i in fig.find_all("img")]
        assert len(pics) == 2 and pics[0].size == pics[1].size  # thumbnail and its attention overlay
    confidences = [float(by_image[f.find("div", **{"class": "path"}).text()]["confidence"]) for f in figures]
    assert confidences == sorted(confidences, reverse=True)
    assert_offline(out / REPORT_FILE)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    # without --report the next run removes its own old report (it would contradict the new predictions)
    _predict(data, ckpt, out)
    assert not (out / REPORT_FILE).exists()


def test_predict_report_without_labels(hostile_data, tmp_path):
    data, ckpt, _ = hostile_data
    out = tmp_path / "pred"
    _predict(data, ckpt, out, "--report", "--csv-labels-path", "none")
    doc = parse(out / REPORT_FILE)
    assert doc.by_id("per-class") is None and doc.by_id("confusion-matrix") is None
    assert len(table_rows(doc.by_id("predicted-classes"))) >= 1
    assert len(doc.by_id("errors").find_all("figure")) == 12


def test_a_users_report_html_is_kept(hostile_data, tmp_path, capsys):
    data, ckpt, _ = hostile_data
    out = tmp_path / "pred"
    out.mkdir()
    (out / REPORT_FILE).write_text("mine")
    _predict(data, ckpt, out)  # no --report: the user's file is no business of predict.py
    assert (out / REPORT_FILE).read_text() == "mine"
    capsys.readouterr()  # that run's log lines
    with pytest.raises(SystemExit):
        _predict(data, ckpt, tmp_path / "pred", "--report")
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out}: holds report.html, not written by ws_dan.predict; choose another output folder, "
                   "or pass --overwrite to replace")
    assert (out / REPORT_FILE).read_text() == "mine"


def _training_report(hostile_data, tmp_path) -> Path:
    from ws_dan.data.datasets import ImageDataset, build_transform, class_folder_samples

    data, ckpt, names = hostile_data
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, class_names=names, num_attentions=4, image_size=32))
    cfg = model.config
    found = class_folder_samples(data, class_names=names)
    dataset = ImageDataset(found.samples, build_transform(cfg.image_size, cfg.mean, cfg.std, False))
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    rows = [{"epoch": e, "train_loss": 1.5 / e, "val_loss": 1.6 / e, "val_top1": 30 + e, "lr": 0.001}
            for e in (1, 2)]
    with open(save_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return write_training_report(save_dir, model, dataset, names, extra={"weights": "last epoch"})


def test_write_training_report(hostile_data, tmp_path):
    names = hostile_data[2]
    out = _training_report(hostile_data, tmp_path)
    assert out == tmp_path / "run" / REPORT_FILE
    doc = parse(out)
    assert doc.find("title").text() == "Training run run"
    assert doc.by_id("training").text() == "2 epoch(s); best validation top-1 32.00% at epoch 2"
    assert decode_data_uri(doc.by_id("curves").attrs["src"]).format == "PNG"
    assert len(table_rows(doc.by_id("per-class"))) == 3
    assert [[td.text() for td in tr.find_all("td")] for tr in doc.by_id("details").find_all("tr")] == \
        [["weights", "last epoch"]]
    paths = [f.find("div", **{"class": "path"}).text() for f in doc.by_id("errors").find_all("figure")]
    assert paths and all(p.split("/")[0] in names for p in paths)  # shown from the class folder on
    assert_offline(out)


# --------------------------------------------------------------------------------------------------------
# A real browser


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium")


def _chromium(browser, profile, *args) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_the_report_in_a_headless_browser(hostile_data, tmp_path):
    browser = _browser()
    data, ckpt, names = hostile_data
    out = tmp_path / "pred"
    _predict(data, ckpt, out, "--report")
    page = (out / REPORT_FILE).resolve()

    shot = tmp_path / "shot.png"
    done = _chromium(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000",
                     page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (1200, 2000)
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page: text, tables, the matrix and the thumbnails are drawn
    assert (pixels[:, :600] < 128).mean() > 0.01  # dark pixels (text) on the left half

    # After the script ran: the hash sorts the table (a headless browser cannot click), in sort_rows' order.
    for key, direction in [("f1", "desc"), ("class", "asc"), ("support", "asc")]:
        dom = _chromium(browser, tmp_path / "profile", "--dump-dom", f"{page.as_uri()}#sort={key}-{direction}")
        assert dom.returncode == 0, dom.stderr[-2000:]
        b = _Builder()
        b.feed(dom.stdout)
        table = b.root.by_id("per-class")
        assert table.attrs.get("data-sorted") == f"{key}-{direction}"
        heads = {th.attrs["data-key"]: th.attrs.get("aria-sort") for th in table.find_all("th")}
        assert heads[key] == ("descending" if direction == "desc" else "ascending")
        assert {k for k, v in heads.items() if v == "none"} == set(heads) - {key}
        shown = [tr.find("td").text() for tr in table.find("tbody").find_all("tr")]
        original = [{"class": tds[0].attrs["data-v"], "f1": float(tds[5].attrs["data-v"]),
                     "support": float(tds[1].attrs["data-v"]), "_i": int(tr.attrs["data-i"])}
                    for tr in parse(page).by_id("per-class").find("tbody").find_all("tr")
                    for tds in [tr.find_all("td")]]
        original.sort(key=lambda r: r["_i"])
        assert shown == [r["class"] for r in sort_rows(original, key, descending=direction == "desc")]
        # the page text shows the hostile class name as text, and the browser made no element of it
        text = b.root.find("body").text()
        assert "<img src=x onerror=alert(1)>" in text and "a & b" in text
        assert all(img.attrs.get("src", "").startswith("data:image/") for img in b.root.find_all("img"))


_CLICKER = """<!doctype html><meta charset="utf-8"><title>harness</title>
<iframe id="f" src="%s" width="1200" height="2000"></iframe><pre id="out">pending</pre>
<script>
document.getElementById("f").addEventListener("load", function () {
  var d = this.contentDocument, out = {};
  var heads = d.querySelectorAll("#per-class th");
  var f1 = null;
  for (var k = 0; k < heads.length; k++) if (heads[k].getAttribute("data-key") === "f1") f1 = heads[k];
  f1.click();
  out.first = d.getElementById("per-class").getAttribute("data-sorted");
  f1.click();
  out.second = d.getElementById("per-class").getAttribute("data-sorted");
  out.rows = [].map.call(d.querySelectorAll("#per-class tbody tr"), function (tr) {
    return tr.querySelector("td").textContent; });
  var imgs = d.querySelectorAll("img");
  out.images = imgs.length;
  out.broken = [].filter.call(imgs, function (im) { return !(im.complete && im.naturalWidth > 0); }).length;
  document.getElementById("out").textContent = JSON.stringify(out);
});
</script>
"""


def _clicked(page: Path, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium inside a harness page that clicks the per-class table's F1 header
    twice and checks every image; returns what the harness saw."""
    import html as html_lib
    import json

    browser = _browser()
    harness = page.parent / "harness.html"  # beside the page: file:// frames of one folder may script each other
    harness.write_text(_CLICKER % page.name, encoding="utf-8")
    dom = _chromium(browser, tmp_path / "profile", "--allow-file-access-from-files", "--virtual-time-budget=10000",
                    "--dump-dom", harness.as_uri())
    harness.unlink()
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    return json.loads(html_lib.unescape(text))


def _assert_clicked_sorts(result: dict, page: Path) -> None:
    assert {result["first"], result["second"]} == {"f1-asc", "f1-desc"}, result
    original = [{"class": tds[0].attrs["data-v"], "f1": float(tds[5].attrs["data-v"]), "_i": int(tr.attrs["data-i"])}
                for tr in parse(page).by_id("per-class").find("tbody").find_all("tr") for tds in [tr.find_all("td")]]
    original.sort(key=lambda r: r["_i"])
    last = result["second"].endswith("desc")
    assert result["rows"] == [r["class"] for r in sort_rows(original, "f1", descending=last)]
    assert result["images"] > 0 and result["broken"] == 0, result


def test_the_report_clicked_in_a_headless_browser(hostile_data, tmp_path):
    """Headers clicked (not only the #sort= hash): each click sorts the per-class table and a second click on the
    same header reverses it, in sort_rows' order; every image of the page decodes (no load error)."""
    data, ckpt, names = hostile_data
    out = tmp_path / "pred"
    _predict(data, ckpt, out, "--report")
    page = (out / REPORT_FILE).resolve()
    _assert_clicked_sorts(_clicked(page, tmp_path), page)


def test_the_training_report_clicked_in_a_headless_browser(hostile_data, tmp_path):
    page = _training_report(hostile_data, tmp_path).resolve()
    _assert_clicked_sorts(_clicked(page, tmp_path), page)
