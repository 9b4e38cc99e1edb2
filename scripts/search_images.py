"""Find image URLs, with their licences, for every class folder: Openverse, Wikimedia Commons or Google.

    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --per-class 100 \\
        --query-template "{class} car"                                   # Openverse, no key needed
    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --source openverse,commons
    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --source commons --commons-category
    python scripts/search_images.py --data-dir my_cars/train --output urls.csv --resume    # after a stop
    python scripts/download_images.py --urls urls.csv --output-dir downloads --reference my_cars/train

Sources (--source, several comma-separated: results merged per class, the same photo kept once):
  openverse  openly licensed images (Flickr, Commons, museums ...); no key. With OPENVERSE_CLIENT_ID and
             OPENVERSE_CLIENT_SECRET in the environment (a registered application) the registered rate applies.
  commons    Wikimedia Commons file search; no key. --commons-category searches the category named by
             --query-template instead (e.g. "{class}" for categories named like the class folders).
  google     Google Custom Search JSON API: closed to new customers, ends 2027-01-01. Needs GOOGLE_API_KEY and
             GOOGLE_CSE_ID in the environment.
Credentials come only from environment variables, never from a flag (flags land in the shell history and the
process list), and never appear in a log or an output.

--license keeps licences (codes cc0, pdm, by, by-sa, by-nc, by-nd, by-nc-sa, by-nc-nd, or the groups open,
commercial, modification, all); the default "open" keeps cc0, pdm, by and by-sa, which allow commercial use and
modification. The output CSV (url, class, query, rank, title, mime, width, height, context_url, source, license,
license_version, license_url, creator, attribution, landing_url) is download_images.py's input; a report (per
class: query, requests, results, complete, error) is written beside it as <output stem>_report.json. A class whose
answer was malformed is marked incomplete; when a quota runs out the run stops, keeps what it found and exits
with status 1: rerun with --resume.
"""

from __future__ import annotations

import argparse

SOURCES = ("openverse", "commons", "google")  # data_tools.search_backends.BACKENDS, the first needs no key


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image URLs with their licences per class folder (Openverse, "
                                            "Wikimedia Commons; Google Custom Search until 2027-01-01)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True,
                   help="folder of class folders (e.g. my_cars/train); their names become the queries")
    p.add_argument("--output", "-o", required=True, help="URL list to write (CSV), the downloader's --urls")
    p.add_argument("--source", default=SOURCES[0],
                   help="openverse (no key), commons (no key) or google (Custom Search JSON API: closed to new "
                        "customers, ends 2027-01-01; GOOGLE_API_KEY / GOOGLE_CSE_ID); several comma-separated")
    p.add_argument("--license", action="append", default=None, metavar="CODES",
                   help="licences to keep: codes (cc0, pdm, by, by-sa, by-nc, by-nd, by-nc-sa, by-nc-nd) or groups "
                        "(open = cc0,pdm,by,by-sa; commercial; modification; all); repeatable (default: open; "
                        "for google: all, its results carry no licence)")
    p.add_argument("--commons-category", action="store_true",
                   help="commons: list the files of the category named by --query-template instead of searching")
    p.add_argument("--per-class", type=int, default=100, help="results wanted per class")
    p.add_argument("--query-template", default="{class}",
                   help="query text; {class} is replaced by the class name, e.g. '{class} exterior photo'")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="search only these class folders (default: all)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra API parameter, e.g. openverse extension=jpg, aspect_ratio=wide, size=large, "
                        "source=flickr; repeatable")
    p.add_argument("--safe", choices=["active", "off"], default="active", help="SafeSearch (google)")
    p.add_argument("--img-type", default=None,
                   help="google imgType: clipart, face, lineart, stock, photo or animated (default: any)")
    p.add_argument("--img-size", default=None,
                   help="google imgSize: icon, small, medium, large, xlarge, xxlarge or huge (default: any)")
    p.add_argument("--min-interval", type=float, default=1.0, help="seconds between two requests (rate limit)")
    p.add_argument("--retries", type=int, default=4, help="extra attempts on rate limits, 5xx and network errors")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubled each time (a server's Retry-After wins)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--api-base-url", action="append", default=None, metavar="[SOURCE=]URL",
                   help="API endpoint (change only for a compatible stand-in, e.g. in tests); SOURCE=URL with "
                        "several sources")
    p.add_argument("--resume", action="store_true", help="keep the classes an earlier run of this output completed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _base_urls(values, sources) -> dict:
    from ws_dan.common.runtime import fail

    urls = {}
    for v in values or []:
        name, sep, url = v.partition("=")
        if sep and name in SOURCES and "://" not in name:
            urls[name] = url
        elif len(sources) == 1:
            urls[sources[0]] = v
        else:
            fail(f"--api-base-url {v}: with several sources write SOURCE=URL (sources: {', '.join(sources)})")
    return urls


def main(args: argparse.Namespace) -> dict:
    """Search; returns the summary (per-class detail in the report JSON)."""
    from data_tools.search import search_images
    from ws_dan.common.io import InputError
    from ws_dan.common.runtime import fail, setup_logging

    setup_logging(verbose=args.verbose)
    try:
        backends = _backends(args)  # one per --source, each with its licences, parameters and limits
        classes = _classes(args)  # --classes checked against the class folders, or None: all of them
        s = search_images(args.data_dir, args.output, backends, per_class=args.per_class,
                          template=args.query_template, classes=classes, resume=args.resume,
                          overwrite=args.overwrite, progress=args.progress)
    except InputError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; the classes done so far are in {args.output}: rerun with --resume", code=130)
    _print_summary(s)
    if s["stopped"]:
        fail(f"stopped early: {s['stopped']}; {len(s['classes_left'])} class(es) left: rerun with --resume once "
             f"the quota is available again", code=1)
    if s["classes_incomplete"]:
        fail(f"{len(s['classes_incomplete'])} class(es) incomplete (see {s['report']}): rerun with --resume",
             code=1)
    return s


def _backends(args: argparse.Namespace) -> list:
    from data_tools.licenses import parse_license_filter
    from data_tools.search import make_backend
    from ws_dan.common.runtime import fail

    sources = [s.strip().lower() for s in args.source.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if not sources or unknown:
        fail(f"--source {args.source}: expected one or more of {', '.join(SOURCES)}")
    if args.classes is not None and not args.classes:
        fail("--classes needs at least one class name")
    params = {}
    for kv in args.param:
        key, sep, value = kv.partition("=")
        if not sep or not key.strip():
            fail(f"--param {kv!r}: expected KEY=VALUE")
        params[key.strip()] = value
    base_urls = _base_urls(args.api_base_url, sources)
    backends = []
    for name in sources:
        licenses = parse_license_filter(args.license if args.license or name != "google" else ["all"])
        kw = dict(base_url=base_urls.get(name), min_interval=args.min_interval, timeout=args.timeout,
                  retries=args.retries, backoff=args.backoff, licenses=licenses, params=dict(params))
        if name == "google":
            kw["params"].update({"safe": args.safe})
            if args.img_type:
                kw["params"]["imgType"] = args.img_type
            if args.img_size:
                kw["params"]["imgSize"] = args.img_size
            if kw["base_url"] is None:
                kw.pop("base_url")
        if name == "commons":
            kw["category"] = args.commons_category
        backends.append(make_backend(name, **kw))
    return backends


def _classes(args: argparse.Namespace):
    from data_tools.search import class_names
    from ws_dan.common.runtime import fail

    if not args.classes:
        return None
    known = set(class_names(args.data_dir))
    missing = [c for c in args.classes if c not in known]
    if missing:
        fail(f"{args.data_dir}: no class folder(s) {', '.join(map(repr, missing))}")
    return args.classes


def _print_summary(s: dict) -> None:
    from ws_dan.common.tables import format_table

    print(format_table([["classes", s["classes"]], ["classes searched", s["classes_complete"]],
                        ["URLs", s["urls"]], ["fewest URLs for a class", s["fewest_results"]],
                        ["API requests", s["requests"]]], ["", "count"]))
    print(f"URL list: {s['output']} (report: {s['report']})")
    for name, why in list(s["classes_incomplete"].items())[:10]:
        print(f"  incomplete: {name}: {why}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
