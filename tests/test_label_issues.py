"""Confident learning (data_tools.label_issues), the K-fold out-of-sample probabilities, find_label_issues.py
(CSV, sheet, resume, quarantine + undo) and the planted-noise benchmark's pieces."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script

from data_tools.label_issues import (
    confident_classes,
    confident_joint,
    estimated_noise_rate,
    find_label_issues,
    per_class_thresholds,
    round_preserving_row_sums,
    suggested_labels,
)

# Six images, three classes. Given labels 0 0 0 1 1 2; image 2 looks like class 1, image 4 like class 2.
P = np.array([
    [0.8, 0.1, 0.1],
    [0.6, 0.3, 0.1],
    [0.1, 0.8, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.2, 0.7],
    [0.1, 0.1, 0.8],
])
Y = np.array([0, 0, 0, 1, 1, 2])


def test_thresholds_are_mean_self_confidence():
    t = per_class_thresholds(P, Y)
    np.testing.assert_allclose(t, [(0.8 + 0.6 + 0.1) / 3, (0.7 + 0.2) / 2, 0.8])
    # a class nobody is labelled with cannot be confidently predicted
    t = per_class_thresholds(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), np.array([0, 1]))
    assert t[2] == np.inf


def test_confident_joint_by_hand():
    # t = [0.5, 0.45, 0.8]; image 0: p0 .8 >= .5 -> 0; 1: .6 -> 0; 2: p1 .8 >= .45 -> 1; 3: p1 .7 -> 1;
    # 4: p2 .7 < .8, p1 .2 < .45, p0 .1 < .5 -> not counted; 5: p2 .8 >= .8 -> 2
    np.testing.assert_array_equal(confident_classes(P, per_class_thresholds(P, Y)), [0, 0, 1, 1, -1, 2])
    raw = confident_joint(P, Y, calibrate=False)
    np.testing.assert_array_equal(raw, [[2, 1, 0], [0, 1, 0], [0, 0, 1]])
    cal = confident_joint(P, Y)
    # rows rescaled to the label counts 3, 2, 1 (paper Eq. 2)
    np.testing.assert_allclose(cal, [[2, 1, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_allclose(cal.sum(axis=1), np.bincount(Y))
    assert estimated_noise_rate(P, Y) == pytest.approx(1 / 6)


def test_confident_class_is_argmax_among_classes_above_threshold():
    # class 0 has the largest probability but is below its threshold 0.6; 1 and 2 clear theirs: 1 wins
    probs = np.array([[0.5, 0.3, 0.2]])
    assert confident_classes(probs, np.array([0.6, 0.25, 0.1]))[0] == 1
    assert confident_classes(probs, np.array([0.6, 0.4, 0.3]))[0] == -1


def test_calibration_row_without_confident_images_stays_on_the_diagonal():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1])
    # thresholds 0.85, 0.9: image 0 counts as class 0, image 1 as nothing; neither class-1 image clears a threshold
    joint = confident_joint(probs, labels, thresholds=np.array([0.85, 0.9]))
    np.testing.assert_allclose(joint, [[2, 0], [0, 2]])  # row 0: one of two counted, rescaled; row 1: none


def test_round_preserving_row_sums():
    m = np.array([[0.4, 0.4, 0.2], [1.5, 1.5, 0.0], [2.0, 0.0, 0.0]])
    r = round_preserving_row_sums(m)
    np.testing.assert_array_equal(r.sum(axis=1), [1, 3, 2])
    np.testing.assert_array_equal(r, [[1, 0, 0], [2, 1, 0], [2, 0, 0]])


def test_find_label_issues_on_the_hand_made_matrix():
    for method in ("prune_by_noise_rate", "prune_by_class", "both", "confident_joint_offdiag"):
        # only image 2 is counted off the diagonal (labelled 0, confidently 1); image 4 clears no threshold
        np.testing.assert_array_equal(find_label_issues(P, Y, method), [2], err_msg=method)
    # the baseline flags every image whose argmax is not its label, most suspicious (lowest p_given) first
    np.testing.assert_array_equal(find_label_issues(P, Y, "argmax_differs"), [2, 4])
    np.testing.assert_array_equal(suggested_labels(P, Y)[[2, 4]], [1, 2])


def test_ranking_is_by_self_confidence_lowest_first_ties_by_index():
    probs = np.array([[0.3, 0.7], [0.1, 0.9], [0.3, 0.7], [0.9, 0.1], [0.8, 0.2], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(find_label_issues(probs, labels, "argmax_differs"), [1, 3, 4, 0, 2])


def test_prune_by_noise_rate_flags_the_estimated_counts_by_margin():
    rng = np.random.default_rng(0)
    n, k = 300, 3
    true = np.repeat(np.arange(k), n // k)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = true.copy()
    flipped = rng.choice(n, 30, replace=False)
    labels[flipped] = (labels[flipped] + 1) % k
    issues = find_label_issues(probs, labels)
    # as many as the calibrated joint's off-diagonal (rounded per row), less those whose argmax is the label
    counts = round_preserving_row_sums(confident_joint(probs, labels))
    np.fill_diagonal(counts, 0)
    assert len(issues) <= counts.sum()
    assert len(set(issues) & set(flipped)) >= 0.8 * len(flipped)  # the planted flips are found
    assert len(issues) <= len(find_label_issues(probs, labels, "argmax_differs"))
    p_given = probs[issues, labels[issues]]
    assert (np.diff(p_given) >= 0).all()


def test_against_cleanlab_when_installed():
    cleanlab = pytest.importorskip("cleanlab.filter")
    rng = np.random.default_rng(1)
    n, k = 200, 4
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = true.copy()
    labels[:20] = (labels[:20] + 1) % k
    for ours, theirs in [("confident_joint_offdiag", "confident_learning"), ("argmax_differs", "predicted_neq_given")]:
        expected = np.flatnonzero(cleanlab.find_label_issues(labels, probs, filter_by=theirs, n_jobs=1))
        assert set(find_label_issues(probs, labels, ours)) == set(expected)


@pytest.mark.parametrize("probs, labels, message", [
    (np.ones((3,)), np.zeros(3, int), "probs: expected an (images, classes) matrix"),
    (np.full((2, 2), 0.5), np.zeros(3, int), "labels: expected 2 class indices"),
    (np.full((2, 2), 0.5), np.array([0, 2]), "labels: expected class indices from 0 to 1, found 0..2"),
    (np.array([[np.nan, 0.5], [0.5, 0.5]]), np.array([0, 1]), "probs: expected finite probabilities"),
])
def test_bad_inputs_get_one_line(probs, labels, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_label_issues(probs, labels)
    with pytest.raises(ValueError, match="method 'nope': expected one of prune_by_noise_rate"):
        find_label_issues(P, Y, "nope")


def test_assign_folds_is_stratified_and_seeded():
    from data_tools.out_of_sample import assign_folds
    from ws_dan.common.io import InputError

    labels = np.repeat([0, 1, 2], [8, 6, 4])
    a = assign_folds(labels, 2, seed=3)
    np.testing.assert_array_equal(a, assign_folds(labels, 2, seed=3))
    assert set(a) == {1, 2}
    for c, n in [(0, 8), (1, 6), (2, 4)]:
        assert (a[labels == c] == 1).sum() == n // 2  # every class split evenly
    assert not np.array_equal(a, assign_folds(labels, 2, seed=4))
    with pytest.raises(InputError, match="--folds 1: expected at least 2"):
        assign_folds(labels, 1)


# ---------------------------------------------------------------------------------------------------------------
# The tool, end to end on the tiny backbone

TINY = ["-m", "tiny", "--no-pretrained", "--image-size", "32", "-e", "1", "-b", "8", "-j", "0", "--no-progress",
        "--device", "cpu", "--folds", "2"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checked(tiny_data, tmp_path_factory):
    """A copy of the tiny dataset (quarantine moves files) plus one truncated JPEG, and a finished 2-fold check."""
    root = tmp_path_factory.mktemp("labels")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    first = sorted((data / "train").iterdir())[0]
    good = sorted(first.iterdir())[0]
    (first / "zz_truncated.jpg").write_bytes(good.read_bytes()[:300])  # a JPEG signature, then nothing to decode
    save = root / "run"
    summary = run_script("find_label_issues", ["--data-dir", str(data), "--save-dir", str(save), *TINY])
    return data, save, summary


def test_outputs_parse_and_hold_every_training_image(checked):
    data, save, s = checked
    assert s["images"] == 25 and s["unreadable"] == 1 and s["classes"] == 3 and s["folds_trained"] == [1, 2]
    probs = np.load(save / "out_of_sample_probs.npy")
    assert probs.shape == (25, 3) and probs.dtype == np.float32
    with open(save / "label_issues_images.csv", newline="", encoding="utf-8") as f:
        images = list(csv.DictReader(f))
    bad = [i for i, r in enumerate(images) if r["path"].endswith("zz_truncated.jpg")]
    assert len(bad) == 1 and np.isnan(probs[bad[0]]).all()  # the unreadable image: a NaN row, never flagged
    ok = np.delete(probs, bad, axis=0)
    np.testing.assert_allclose(ok.sum(axis=1), 1.0, atol=1e-5)  # every other image predicted once, out of sample
    assert sorted(r["path"] for r in images) == sorted(
        p.relative_to(data).as_posix() for p in (data / "train").rglob("*.jpg"))
    assert {r["fold"] for r in images} == {"1", "2"}
    with open(save / "label_issues.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["path", "given_label", "suggested_label", "p_given", "p_suggested", "rank"]
    assert len(rows) == s["flagged"] > 0  # a 1-epoch tiny model is near chance: plenty of suspects
    index = {r["path"]: i for i, r in enumerate(images)}
    names = sorted({r["given_label"] for r in images})
    for rank, row in enumerate(rows, 1):
        i = index[row["path"]]
        assert row["rank"] == str(rank) and row["given_label"] == images[i]["given_label"]
        assert float(row["p_given"]) == pytest.approx(probs[i, names.index(row["given_label"])], abs=1e-6)
        assert float(row["p_suggested"]) == pytest.approx(probs[i, names.index(row["suggested_label"])], abs=1e-6)
        assert row["suggested_label"] != row["given_label"] and i not in bad
    assert [float(r["p_given"]) for r in rows] == sorted(float(r["p_given"]) for r in rows)
    assert (save / "label_issues_sheet.png").stat().st_size > 0
    assert (save / "fold_1" / "run" / "last.pt").is_file() and not (save / "fold_1" / "data").exists()


def test_rerun_reuses_the_folds_and_other_settings_are_refused(checked, capsys):
    data, save, _ = checked
    s = run_script("find_label_issues", ["--data-dir", str(data), "--save-dir", str(save), *TINY,
                                         "--filter-by", "argmax_differs", "--top", "0"])
    assert s["folds_trained"] == [] and s["flagged"] == s["argmax_differs"]
    assert not (save / "label_issues_sheet.png").exists()
    with pytest.raises(SystemExit) as e:
        run_script("find_label_issues", ["--data-dir", str(data), "--save-dir", str(save), *TINY, "--lr", "0.5"])
    assert e.value.code == 2
    assert (f"error: {save / 'folds.json'}: the folds in {save} were made for other training settings (lr); "
            "choose a new --save-dir or pass --overwrite to train them again") in capsys.readouterr().err


def test_quarantine_and_undo_round_trip(checked):
    data, save, _ = checked
    before = {p: _sha(p) for p in data.rglob("*.jpg")}
    s = run_script("find_label_issues", ["--data-dir", str(data), "--save-dir", str(save), *TINY,
                                         "--action", "quarantine"])
    with open(save / "label_issues.csv", newline="", encoding="utf-8") as f:
        flagged = [data / r["path"] for r in csv.DictReader(f)]
    assert s["quarantine"]["moved"] == len(flagged) > 0
    assert not any(p.exists() for p in flagged)
    moved = [p for p in (save / "quarantine").rglob("*.jpg")]
    assert len(moved) == len(flagged)
    with open(save / "label_issues_manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    assert {Path(r["original"]) for r in manifest} == {p.resolve() for p in flagged}
    assert all(r["group"] and r["suggested_label"] and r["p_given"] for r in manifest)
    counts = run_script("find_label_issues", ["--undo", str(save / "label_issues_manifest.csv")])
    assert counts["restored"] == len(flagged) and not counts["problems"]
    assert {p: _sha(p) for p in data.rglob("*.jpg")} == before


def test_script_refusals(checked, tmp_path, capsys):
    data, save, _ = checked
    foreign = tmp_path / "busy"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        (["--undo", "x.csv", "--data-dir", str(data)], "error: --undo MANIFEST takes no --data-dir / --save-dir"),
        (["--data-dir", str(data)], "error: --data-dir and --save-dir are required (or --undo MANIFEST)"),
        (["--data-dir", str(data), "--save-dir", str(foreign), *TINY],
         f"error: {foreign}: the folder exists, is not empty and holds no earlier label check (folds.json); "
         "choose a new folder or pass --overwrite"),
        (["--data-dir", str(data), "--save-dir", str(data / "train" / "out"), *TINY],
         f"error: {data / 'train' / 'out'}: the output folder is inside the input folder {data}"),
        (["--data-dir", str(tmp_path / "missing"), "--save-dir", str(tmp_path / "s"), *TINY],
         f"error: {tmp_path / 'missing'}: expected a folder of images, found nothing (the path does not exist)"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            run_script("find_label_issues", argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


# ---------------------------------------------------------------------------------------------------------------
# Planted noise and its scores


def test_similar_classes_prefer_the_same_make_and_the_closest_name():
    from data_tools.label_noise import similar_classes

    names = ["Dodge Challenger SRT8 2011", "Dodge Charger SRT-8 2009", "Dodge Caliber Wagon 2012",
             "Audi S5 Coupe 2012", "Audi S5 Convertible 2012", "Bugatti Veyron 16.4 Coupe 2009",
             "Chevrolet Corvette Convertible 2012", "Chevrolet Express Cargo Van 2007",
             "Ferrari California Convertible 2012"]
    m = similar_classes(names)
    assert m["Dodge Challenger SRT8 2011"] == "Dodge Charger SRT-8 2009"  # same make, closest name
    assert m["Audi S5 Convertible 2012"] == "Audi S5 Coupe 2012"
    assert m["Bugatti Veyron 16.4 Coupe 2009"] == "Audi S5 Coupe 2012"  # no other Bugatti: the same body style
    # a convertible is confused with another convertible before a van of its make
    assert m["Chevrolet Corvette Convertible 2012"] in ("Audi S5 Convertible 2012",
                                                         "Ferrari California Convertible 2012")
    assert similar_classes(names, {"Audi S5 Coupe 2012": "Dodge Caliber Wagon 2012"})["Audi S5 Coupe 2012"] == \
        "Dodge Caliber Wagon 2012"


def test_write_noisy_copy_files_the_planted_share_under_wrong_classes(tiny_data, tmp_path):
    from data_tools.label_noise import write_noisy_copy

    copy = write_noisy_copy(tiny_data, tmp_path / "noisy", 0.25, "random", seed=1)
    assert copy.images == 24 and len(copy.flips) == 6
    assert len(list(copy.root.rglob("*.jpg"))) == 24  # nothing lost to a name clash
    for rel, (true, given) in copy.flips.items():
        assert rel.split("/")[0] == given != true
        assert (copy.root / rel).is_file()
        assert _sha(copy.root / rel) in {_sha(p) for p in (tiny_data / "train" / true).iterdir()}
    with open(tmp_path / "noisy" / "planted_flips.csv", newline="", encoding="utf-8") as f:
        assert {r["path"]: (r["true_label"], r["given_label"]) for r in csv.DictReader(f)} == copy.flips
    similar = write_noisy_copy(tiny_data, tmp_path / "noisy2", 0.25, "similar", seed=1)
    assert all(given != true for true, given in similar.flips.values())


def test_flag_scores():
    from data_tools.label_noise import flag_scores, jaccard

    s = flag_scores(["a", "b", "c", "d"], ["a", "b", "x"])
    assert (s["flagged"], s["found"]) == (4, 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert flag_scores([], ["a"])["recall"] == 0.0 and flag_scores([], ["a"])["precision"] == 1.0
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)


def test_benchmark_scores_every_finder_on_the_planted_flips(tiny_data, tmp_path, capsys):
    from data_tools.label_issues import find_label_issues
    from data_tools.label_noise import flag_scores

    work = tmp_path / "bench"
    rows = run_script("benchmark_label_issues", ["--data-dir", str(tiny_data), "--work-dir", str(work), *TINY,
                                                 "--modes", "random", "--fraction", "0.25"])
    ours = [r for r in rows if not r["method"].startswith("cleanlab")]
    assert [r["method"] for r in ours] == ["prune_by_noise_rate", "prune_by_class", "confident_joint_offdiag",
                                           "argmax_differs"]
    with open(work / "random" / "planted_flips.csv", newline="", encoding="utf-8") as f:
        planted = {r["path"] for r in csv.DictReader(f)}
    assert len(planted) == 6
    # the argmax row, recomputed from the files the run left
    probs = np.load(work / "random" / "run" / "out_of_sample_probs.npy").astype(np.float64)
    with open(work / "random" / "run" / "label_issues_images.csv", newline="", encoding="utf-8") as f:
        images = list(csv.DictReader(f))
    names = sorted({r["given_label"] for r in images})
    labels = np.array([names.index(r["given_label"]) for r in images])
    flagged = {images[i]["path"] for i in find_label_issues(probs, labels, "argmax_differs")}
    expected = flag_scores(flagged, planted)
    assert {k: ours[3][k] for k in expected} == expected
    out = capsys.readouterr().out
    assert "mode    method" in out and "precision %" in out and "random: 6 of 24 labels flipped" in out


def test_script_defaults_are_a_short_cheap_run():
    from conftest import script

    args = script("find_label_issues").get_args_parser().parse_args(["--data-dir", "d", "--save-dir", "s"])
    assert (args.folds, args.model, args.method, args.image_size, args.epochs, args.filter_by, args.action) == \
        (4, "mobilenet_v2", "baseline", 224, 4, "prune_by_noise_rate", "none")
    bench = script("benchmark_label_issues").get_args_parser().parse_args(["--data-dir", "d", "--work-dir", "w"])
    assert (bench.fraction, bench.modes, bench.folds) == (0.05, "random,similar", 4)
