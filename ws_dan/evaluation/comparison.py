"""The statistics of a comparison of training methods (``scripts/compare_methods.py``): each method's best learning
rate, paired tests photo by photo, and the markdown tables of its table.md. Pure functions: rows in, numbers and
lines out (standard library only).

The inputs:

* a *result* is one training run: ``{"method", "lr", "seed", "status"}`` (status "ok", "diverged" or "failed") and,
  for an ok run, ``"test_top1"`` (final test top-1, %), ``"best_test_top1"`` (the best epoch's), ``"minutes"``,
  ``"curve"`` (test top-1 per epoch) and, on the sample set, ``"crop_hits_badge"``;
* ``photos[(method, seed)] = {photo: (label, predicted class)}``: one run's answer on every test photo.

Means and spreads over seeds: mean = (x_1 + ... + x_n) / n and the sample standard deviation
sd = sqrt(sum_i (x_i - mean)^2 / (n - 1)) (0 for a single run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

#: ``photos`` as described above: (method, seed) -> {photo: (label, predicted)}.
Photos = dict[tuple[str, int], dict[str, tuple[str, str]]]


def summarize(results: list[dict], methods: list[str], select_seeds: Optional[list[int]] = None
              ) -> tuple[dict, list[str]]:
    """Per method and learning rate: mean and sd of the final test top-1 over the seeds; each method's best
    learning rate (highest mean over ``select_seeds``, the sweep's seeds, or all; a learning rate with a diverged
    or failed run is never best). Returns
    ({method: {"lr", "mean", "sd", "n", "best_mean", "runs"}}, the markdown lines of the per-lr table)."""
    best: dict[str, dict] = {}
    lines = ["| method | lr | final top-1 % per seed | mean ± sd | best epoch's top-1 % (mean) |",
             "|---|---|---|---|---|"]
    for method in methods:
        lrs = sorted({r["lr"] for r in results if r["method"] == method})
        for lr in lrs:
            runs = [r for r in results if r["method"] == method and r["lr"] == lr]
            ok = [r for r in runs if r["status"] == "ok"]
            accs = [r["test_top1"] for r in ok]
            failed = len(ok) < len(runs)
            mean = statistics.mean(accs) if accs else math.nan
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            per_seed = ", ".join(f"{r['test_top1']:.1f}" if r["status"] == "ok" else r["status"] for r in runs)
            best_mean = statistics.mean(r["best_test_top1"] for r in ok) if ok else math.nan
            lines.append(f"| {method} | {lr:g} | {per_seed} | " + (f"{mean:.2f} ± {sd:.2f}" if accs else "-")
                         + (" (a run failed)" if failed and accs else "") + f" | {best_mean:.1f} |")
            chosen_on = [r["test_top1"] for r in ok if select_seeds is None or r["seed"] in select_seeds]
            score = -math.inf if failed or not chosen_on else statistics.mean(chosen_on)
            if method not in best or score > best[method]["score"]:
                best[method] = {"lr": lr, "mean": mean, "sd": sd, "n": len(accs), "best_mean": best_mean,
                                "runs": ok, "score": score}
    return best, lines


def best_table(best: dict, methods: Sequence[str], badge_column: bool = False) -> list[str]:
    """The markdown table of each method at its best learning rate (``summarize``'s ``best``): mean ± sd of the
    final top-1, runs, the best epoch's mean, minutes per run and, with ``badge_column``, the mean share of test
    images whose inference crop holds the badge (the sample set)."""
    lines = ["| method | best lr | final test top-1 % (mean ± sd) | runs | best epoch's top-1 % (mean) "
             "| minutes per run |" + (" crop box holds the badge |" if badge_column else ""),
             "|---|---|---|---|---|---|" + ("---|" if badge_column else "")]
    for method in methods:
        b = best.get(method)
        if not b or not b["runs"]:
            lines.append(f"| {method} | - | no finished run | 0 | - | - |" + (" - |" if badge_column else ""))
            continue
        minutes = statistics.mean(r["minutes"] for r in b["runs"])
        line = (f"| {method} | {b['lr']:g} | {b['mean']:.2f} ± {b['sd']:.2f} | {b['n']} | {b['best_mean']:.1f} | "
                f"{minutes:.0f} |")
        if badge_column:
            line += f" {statistics.mean(r['crop_hits_badge'] for r in b['runs']):.0%} |"
        lines.append(line)
    return lines


def mean_curves(best: dict, methods: Sequence[str]) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """``{"<method> (lr <lr>)": (epochs, mean, sd)}``: each method's test top-1 per epoch at its best learning rate,
    mean and sd over its runs, over the epochs every run has (methods without a finished run are left out)."""
    curves = {}
    for method in methods:
        b = best.get(method)
        if not b or not b["runs"]:
            continue
        length = min(len(r["curve"]) for r in b["runs"])
        per_epoch = [[r["curve"][i] for r in b["runs"]] for i in range(length)]
        curves[f"{method} (lr {b['lr']:g})"] = (list(range(1, length + 1)), [statistics.mean(v) for v in per_epoch],
                                                [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch])
    return curves


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: with no difference between two classifiers, each photo that exactly one
    of them gets right is equally likely to be either's, so ``only_a ~ Binomial(n, 1/2)`` with n = a + b, and

        p = min(1, 2 * sum_{k=0}^{min(a, b)} C(n, k) / 2^n)     (1 when n = 0)

    (the binomial test at 1/2: by symmetry the outcomes as unlikely as the one seen are the two tails). Computed
    in integers, so exact up to the final division."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** n)


@dataclass
class PhotoTallies:
    """Per-photo counts over the runs of each method, on the photos every run evaluated."""

    #: the photos every run evaluated, sorted
    names: list[str]
    #: method -> its seeds, sorted
    runs: dict[str, list[int]]
    #: (method, seed) -> {photo: whether that run got it right}
    right: dict[tuple[str, int], dict[str, bool]]
    #: method -> {photo: how many of its runs got it wrong}
    wrong: dict[str, dict[str, int]]
    #: method -> {photo: the share of its runs that got it right, (runs - wrong) / runs}
    share: dict[str, dict[str, float]]


def photo_tallies(photos: Photos, methods: Sequence[str]) -> PhotoTallies:
    """Count, photo by photo, which runs of each method got it right (see :class:`PhotoTallies`)."""
    runs = {m: sorted(s for mm, s in photos if mm == m) for m in methods}
    names = sorted(set.intersection(*(set(v) for v in photos.values()))) if photos else []
    right = {key: {n: pred[n][0] == pred[n][1] for n in names} for key, pred in photos.items()}
    wrong = {m: {n: sum(not right[(m, s)][n] for s in runs[m]) for n in names} for m in methods}
    share = {m: {n: (len(runs[m]) - wrong[m][n]) / len(runs[m]) for n in names} for m in methods}
    return PhotoTallies(names, runs, right, wrong, share)


def per_photo_rows(photos: Photos, tallies: PhotoTallies, methods: Sequence[str]) -> list[dict]:
    """per_photo.csv: ``{"image", "label", "<method>_wrong": "k/n", "<method>_predicted": its most common wrong
    answer ("" when none)}``, the photos most runs got wrong first."""
    rows = []
    for n in tallies.names:
        row = {"image": n, "label": next(iter(photos.values()))[n][0]}
        for m in methods:
            seeds = tallies.runs[m]
            answers = [photos[(m, s)][n][1] for s in seeds if not tallies.right[(m, s)][n]]
            row[f"{m}_wrong"] = f"{tallies.wrong[m][n]}/{len(seeds)}"
            row[f"{m}_predicted"] = max(set(answers), key=answers.count) if answers else ""
        rows.append(row)
    rows.sort(key=lambda r: (-sum(tallies.wrong[m][r["image"]] for m in methods), r["image"]))
    return rows


def paired_lines(tallies: PhotoTallies, methods: Sequence[str], hardest_first: Sequence[str]) -> list[str]:
    """The paired section of table.md: how many photos every run got wrong (``hardest_first``: the photos in
    per_photo.csv's order), then each method against ``methods[0]``: seed by seed, the photos only one of the two
    runs got right and :func:`mcnemar_exact`; over all seeds a sign test across photos (a photo counts for the
    method whose runs got it right in a larger share, ties drop out; its p-value is the same binomial formula)."""
    names, runs, share = tallies.names, tallies.runs, tallies.share
    every = [n for n in hardest_first if all(share[m][n] == 0 for m in methods)]
    lines = [f"Paired, photo by photo (`--paired`: each run's last.pt at its method's best lr on the same {len(names)} "
             f"test photos; per_photo.csv). Photos wrong in all {sum(map(len, runs.values()))} runs: {len(every)}"
             + (" (" + ", ".join(every[:8]) + (", ..." if len(every) > 8 else "") + ")" if every else "") + ".", "",
             "| method vs " + methods[0] + " | seeds | photos only the method gets right | only " + methods[0]
             + " | exact p (two-sided) |", "|---|---|---|---|---|"]

    def versus(m: str, seeds: str, mine: dict[str, float], theirs: dict[str, float]) -> str:
        """Photos where ``mine`` beats ``theirs`` and the reverse (bools for one run each: only one is right)."""
        a, b = sum(mine[n] > theirs[n] for n in names), sum(theirs[n] > mine[n] for n in names)
        return f"| {m} | {seeds} | {a} | {b} | {mcnemar_exact(a, b):.3g} |"

    ref = methods[0]
    for m in methods[1:]:
        lines += [versus(m, str(s), tallies.right[(m, s)], tallies.right[(ref, s)]) for s in runs[m] if s in runs[ref]]
        if len(runs[m]) > 1 or len(runs[ref]) > 1:
            lines.append(versus(m, f"all ({len(runs[m])} vs {len(runs[ref])} runs; sign test over photos)", share[m],
                                share[ref]))
    return lines


def paired_report(photos: Photos, methods: list[str]) -> tuple[list[dict], list[str]]:
    """Per-photo rows (:func:`per_photo_rows`) and the paired section of table.md (:func:`paired_lines`) from
    ``photos`` (the runs at each method's best rate). Each method is compared with ``methods[0]`` on the photos
    both evaluated: seed by seed (McNemar), and over all seeds by a sign test across photos (photos are the
    independent units; the runs of one photo are not)."""
    tallies = photo_tallies(photos, methods)
    rows = per_photo_rows(photos, tallies, methods)
    return rows, paired_lines(tallies, methods, [r["image"] for r in rows])


def hardest(rows: list[dict], limit: int = 12) -> list[tuple[str, list[str]]]:
    """The ``limit`` photos most runs got wrong (``per_photo_rows``, hardest first) with a caption each: its label,
    how many of all the runs got it wrong, and the first method's most common wrong answer (the first method that
    has one). Empty when no run erred."""
    methods = [k[:-len("_wrong")] for k in rows[0] if k.endswith("_wrong")] if rows else []

    def count(r: dict, i: int) -> int:  # i = 0: runs wrong, 1: runs, summed over the methods' "k/n" cells
        return sum(int(r[f"{m}_wrong"].split("/")[i]) for m in methods)

    return [(r["image"], [r["label"], f"wrong in {count(r, 0)} of {count(r, 1)} runs",
                          "-> " + next(r[f"{m}_predicted"] for m in methods if r[f"{m}_predicted"])])
            for r in rows if count(r, 0)][:limit]
