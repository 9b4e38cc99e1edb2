"""Find image URLs for every class folder with Google's Custom Search JSON API (image search).

    export GOOGLE_API_KEY=...      # an API key with the Custom Search API enabled
    export GOOGLE_CSE_ID=...       # the Programmable Search Engine id ("cx"), image search switched on
    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --per-class 100 \\
        --query-template "{class} exterior photo"
    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --resume    # after a quota stop
    python scripts/download_images.py --urls urls.csv --output-dir downloads --reference my_cars/train

Each class folder's name (underscores read as spaces) fills {class} in --query-template; results are fetched ten
per request up to --per-class (the API serves at most 100 per query), at most one request per --min-interval
seconds, with retries and back-off on rate limits and server errors. The key and engine id come only from the
environment variables above, never from a flag (flags land in the shell history and the process list).
The output CSV (url, class, query, rank, title, mime, width, height, context_url) is download_images.py's input;
a report (per class: query, requests, results, complete) is written beside it as <output stem>_report.json.
When the daily quota runs out the run stops, keeps what it found and exits with status 1: rerun with --resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

DEFAULT_API_BASE_URL = "https://www.googleapis.com/customsearch/v1"  # data_tools.search.DEFAULT_API_BASE_URL


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image URLs per class folder from the Google Custom Search JSON API",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True,
                   help="folder of class folders (e.g. my_cars/train); their names become the queries")
    p.add_argument("--output", "-o", required=True, help="URL list to write (CSV), the downloader's --urls")
    p.add_argument("--per-class", type=int, default=100, help="results wanted per class (at most 100)")
    p.add_argument("--query-template", default="{class}",
                   help="query text; {class} is replaced by the class name, e.g. '{class} exterior photo'")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="search only these class folders (default: all)")
    p.add_argument("--safe", choices=["active", "off"], default="active", help="SafeSearch")
    p.add_argument("--img-type", default=None,
                   help="API imgType: clipart, face, lineart, stock, photo or animated (default: any)")
    p.add_argument("--img-size", default=None,
                   help="API imgSize: icon, small, medium, large, xlarge, xxlarge or huge (default: any)")
    p.add_argument("--min-interval", type=float, default=1.0, help="seconds between two requests (rate limit)")
    p.add_argument("--retries", type=int, default=4, help="extra attempts on rate limits, 5xx and network errors")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubled each time (a server's Retry-After wins)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--api-base-url", default=DEFAULT_API_BASE_URL,
                   help="API endpoint (change only for a compatible stand-in, e.g. in tests)")
    p.add_argument("--resume", action="store_true", help="keep the classes an earlier run of this output completed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Search; returns the summary (per-class detail in the report JSON)."""
    from data_tools.common import DataToolError, format_table
    from data_tools.search import SearchClient, search_images
    from ws_dan.utils import fail, setup_logging

    setup_logging(verbose=args.verbose)
    extra = {"safe": args.safe}
    if args.img_type:
        extra["imgType"] = args.img_type
    if args.img_size:
        extra["imgSize"] = args.img_size
    try:
        if args.classes is not None and not args.classes:
            fail("--classes needs at least one class name")
        client = SearchClient.from_env(base_url=args.api_base_url, min_interval=args.min_interval,
                                       timeout=args.timeout, retries=args.retries, backoff=args.backoff, params=extra)
        classes = None
        if args.classes:
            from data_tools.search import class_names

            known = set(class_names(args.data_dir))
            unknown = [c for c in args.classes if c not in known]
            if unknown:
                fail(f"{args.data_dir}: no class folder(s) {', '.join(map(repr, unknown))}")
            classes = args.classes
        s = search_images(args.data_dir, args.output, client, per_class=args.per_class,
                          template=args.query_template, classes=classes, resume=args.resume,
                          overwrite=args.overwrite, progress=args.progress)
    except DataToolError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; the classes done so far are in {args.output}: rerun with --resume", code=130)
    print(format_table([["classes", s["classes"]], ["classes searched", s["classes_complete"]],
                        ["URLs", s["urls"]], ["fewest URLs for a class", s["fewest_results"]],
                        ["API requests", s["requests"]]], ["", "count"]))
    print(f"URL list: {s['output']} (report: {s['report']})")
    if s["stopped"]:
        fail(f"stopped early: {s['stopped']}; {len(s['classes_left'])} class(es) left: rerun with --resume once "
             f"the quota is available again", code=1)
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
