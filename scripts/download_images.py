"""Download the images of a URL list into class folders: concurrent, size- and time-bounded, resumable.

    python scripts/download_images.py --urls urls.csv --output-dir downloads \
        --reference my_cars/train --reference my_cars/test
    python scripts/download_images.py --urls url_lists/ --output-dir downloads --max-per-class 100 --workers 16
    python scripts/download_images.py --urls urls.csv --output-dir downloads        # again: skips what is done

--urls is a CSV with a URL column and a class column (what search_images.py writes: url,class,...), a text file
(one "URL CLASS" or "CLASS<tab>URL" per line), or a folder of <class>.txt files of URLs. Only http(s) URLs are
fetched; each file is capped at --max-bytes while it streams, must decode as an image (any format) and is saved
as an RGB JPEG named from a hash of its URL in OUTPUT_DIR/<class>/ (class names are made safe as folder names).
Redirects are followed within the same limits. Images that duplicate one already in OUTPUT_DIR or in a
--reference folder are not saved. OUTPUT_DIR receives download_manifest.csv (url, class, status, reason, path,
sha256, ..., and the licence columns of the URL list: source, license, license_version, license_url, creator,
attribution, landing_url) and download_report.json. Nothing is written outside OUTPUT_DIR: a class folder that is
a symbolic link is refused (one line per class). Running the same command again skips the URLs already done and retries
the transient failures (timeouts, connection errors, HTTP 5xx / 429).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Defaults repeated from data_tools.download, so that --help imports nothing heavy.
DEFAULT_WORKERS, DEFAULT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_MAX_BYTES = 8, 15.0, 2, 20 * 1024 * 1024
DEFAULT_THRESHOLD = 36  # data_tools.dedupe.DEFAULT_THRESHOLD


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download images from URL lists into class folders, safely",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--urls", required=True,
                   help="CSV (url and class columns), text file (URL CLASS per line) or folder of <class>.txt files")
    p.add_argument("--output-dir", "--od", required=True,
                   help="target folder: new, empty, or an earlier download's (to resume or add to it)")
    p.add_argument("--reference", action="append", default=[], metavar="DIR",
                   help="folder whose images must not be downloaded again (e.g. train/ and test/); repeatable")
    p.add_argument("--class-name", default=None, help="class of the URLs that have none (text lists)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="download threads")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds allowed to connect and for each read")
    p.add_argument("--total-timeout", type=float, default=None,
                   help="seconds allowed for one attempt, redirects included (default: 4 x --timeout)")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help="extra attempts after a timeout, a connection error, HTTP 429 or 5xx")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="seconds before the first retry, doubled each time (a server's Retry-After wins)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest file accepted, in bytes")
    p.add_argument("--max-redirects", type=int, default=5, help="redirects followed per URL")
    p.add_argument("--max-per-host", type=int, default=2, help="simultaneous requests to one host")
    p.add_argument("--max-per-class", type=int, default=None,
                   help="stop adding to a class folder once it holds this many images (default: no limit)")
    p.add_argument("--min-side", type=int, default=32, help="smallest accepted image side, in pixels")
    p.add_argument("--max-pixels", type=int, default=100 * 1024 * 1024,
                   help="largest accepted image area (decompression-bomb guard)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality for images that are re-encoded")
    p.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=True,
                   help="skip images that duplicate one in OUTPUT_DIR, a --reference folder or this run")
    p.add_argument("--threshold", "-t", type=int, default=DEFAULT_THRESHOLD,
                   help="near-duplicate distance, as dedupe.py (0-96)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry URLs an earlier run recorded as failed or duplicate")
    p.add_argument("--user-agent", default=None, help="User-Agent header (default: the toolkit's)")
    p.add_argument("--env-proxy", action=argparse.BooleanOptionalAction, default=True,
                   help="use the http_proxy / https_proxy / no_proxy environment variables")
    p.add_argument("-j", "--hash-workers", type=int, default=None,
                   help="processes for hashing the existing images (default: all CPU cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not an earlier download (no file is replaced)")
    p.add_argument("--seed", type=int, default=0, help="seed of the retry jitter")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Download; returns the summary (also written to OUTPUT_DIR/download_report.json)."""
    from data_tools.download import USER_AGENT, DownloadSettings, download_images
    from ws_dan.common.io import InputError, read_csv_rows
    from ws_dan.common.runtime import fail, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    settings = DownloadSettings(
        workers=args.workers, timeout=args.timeout, total_timeout=args.total_timeout, retries=args.retries,
        backoff=args.backoff, max_bytes=args.max_bytes, max_redirects=args.max_redirects,
        max_per_host=args.max_per_host, max_per_class=args.max_per_class, max_pixels=args.max_pixels,
        min_side=args.min_side, quality=args.quality, dedupe=args.dedupe, threshold=args.threshold,
        retry_failed=args.retry_failed, user_agent=args.user_agent or USER_AGENT, use_env_proxy=args.env_proxy,
        seed=args.seed)
    try:
        s = download_images(args.urls, args.output_dir, reference=args.reference, settings=settings,
                            default_class=args.class_name, hash_workers=args.hash_workers, progress=args.progress,
                            overwrite=args.overwrite)
    except InputError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; rerun the same command to finish (what was downloaded is recorded in "
             f"{Path(args.output_dir) / '.download_journal.csv'})", code=130)
    rows = [["URLs listed", s["urls"]], ["done by an earlier run", s["carried_over"]], ["tried now", s["attempted"]],
            ["ok (images in the folders)", s["ok"]], ["  new this run", s["new_images"]],
            ["duplicates (not saved)", s["duplicate"]], ["skipped", s["skipped"]],
            ["failed (final)", s["failed"]], ["errors (retried by a rerun)", s["error"]]]
    rows += [[f"  {reason}", n] for reason, n in list(s["failure_reasons"].items())[:10]]
    rows += [["MB downloaded", round(s["bytes_downloaded"] / 1e6, 2)], ["seconds", s["seconds"]]]
    print(format_table(rows, ["", "count"]))
    if s["classes"] <= 30:
        print(format_table([[c, n["ok"], n["duplicate"], n["failed"] + n["error"], n["skipped"]]
                            for c, n in s["per_class"].items()], ["class", "ok", "duplicate", "failed", "skipped"]))
    problems = [r for r in read_csv_rows(s["manifest"]) if r["status"] in ("failed", "error")]
    for r in problems[:8]:
        print(f"  {r['status']}: {r['url'][:100]}: {r['reason']}")
    for label, why in s["refused_classes"].items():
        print(f"  refused class {label!r}: {why}")
    print(f"images in {args.output_dir}/<class>/; manifest: {s['manifest']}")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
