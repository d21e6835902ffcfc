"""`python -m taxi_assets <step>`: the steps as commands, for Kestra, cron or a shell.

Besides the steps, tools for this machine: `demo` (README command 1), `dagster-home` (the Dagster
instance it records into), `psql` (the taxi-data database) and `emulators status|stop`.

Logs go to stderr; under Kestra (TAXI_LOG_FORMAT=kestra, set in its image) they are lines of
Kestra's log protocol on stdout, so Kestra shows them at their level (`taxi_assets.logs`). On
success stdout carries Kestra's `::{"outputs": ...}::` and `::{"metrics": [...]}::` lines, which
a Kestra task turns into outputs and metrics (and which anything else can parse as JSON). On
failure: one line `error: ...` (on stderr; under Kestra at ERROR), exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from taxi_assets.config import CHECKED_STORES, STORE_NAMES, Settings
from taxi_assets.datasets import ALL_DATASETS, MIRROR, SOURCES, TaxiDataset, dataset
from taxi_assets.errors import ConfigError, TaxiError
from taxi_assets.logs import print_error, setup_logging
from taxi_assets.months import Month, parse_instant

log = logging.getLogger("taxi_assets")


def emit(outputs: dict, counters: dict[str, int | float], tags: dict[str, str], seconds: float | None = None) -> None:
    """Print the Kestra outputs and metrics lines."""
    metrics = [{"name": k, "type": "counter", "value": v, "tags": tags} for k, v in counters.items()]
    if seconds is not None:
        metrics.append({"name": "duration", "type": "timer", "value": seconds, "tags": tags})
    print("::" + json.dumps({"outputs": outputs}) + "::")
    print("::" + json.dumps({"metrics": metrics}) + "::")
    sys.stdout.flush()


TAXI_NAMES = tuple(dict.fromkeys(d.taxi for d in ALL_DATASETS))  # every source's, in order


def _month_args(parser: argparse.ArgumentParser, required: bool, month: bool = True) -> None:
    parser.add_argument(
        "--source",
        choices=list(SOURCES),
        default=MIRROR.name,
        help="mirror: the course's CSV mirror (default); tlc: the TLC's own monthly Parquet files",
    )
    ranges = "; ".join(f"{d.source.name} {d.taxi} {d.published_range()}" for d in ALL_DATASETS)
    parser.add_argument("--taxi", required=required, choices=TAXI_NAMES, help="taxi type (tlc also has fhvhv)")
    if month:
        parser.add_argument("--month", required=required, type=_month, help=f"month as YYYY-MM (published: {ranges})")


def _dataset(args: argparse.Namespace) -> TaxiDataset:
    try:
        return dataset(args.taxi, args.source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _tags(ds: TaxiDataset, month: Month) -> dict[str, str]:
    return {"source": ds.source.name, "taxi": ds.taxi, "month": str(month)}


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _optional_month(text: str) -> Month | None:
    return _month(text) if text.strip() else None


def cmd_extract(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.steps.extract import extract

    ds = _dataset(args)
    info = extract(settings, ds, args.month, revalidate=True)  # a run's first step asks the source
    tags = _tags(ds, args.month)
    emit(
        {
            "path": info.path,
            "file": info.filename,
            "bytes": info.bytes,
            "sha256": info.sha256,
            "data_lines": info.data_lines,
            "downloaded": info.downloaded,
        },
        {"bytes": info.bytes, "data_lines": info.data_lines},
        tags,
    )


def cmd_load_postgres(args: argparse.Namespace, settings: Settings) -> None:

    from taxi_assets import database, ledger
    from taxi_assets.steps.extract import ask, download_in_use, extract
    from taxi_assets.steps.postgres import load_postgres

    ds = _dataset(args)
    with download_in_use(settings, ds, args.month):
        info = extract(settings, ds, args.month)
        ask(settings, ds, args.month, ledger.POSTGRES)  # kept until Postgres holds it
        with database.connect(settings) as conn:
            report = load_postgres(conn, ds, args.month, Path(info.path), expected_rows=info.data_lines)
    emit(
        report.as_dict(),
        {
            "rows": report.rows_loaded,
            "duplicate_rows": report.duplicate_rows,
            "out_of_month_rows": report.out_of_month_rows,
            "null_key_values": sum(report.null_keys.values()),
        },
        _tags(ds, args.month),
        report.seconds,
    )


def cmd_check(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets import checks, ledger
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.errors import CheckError
    from taxi_assets.steps.extract import download_in_use

    ds = _dataset(args)
    if args.store != ledger.POSTGRES:
        settings = with_local_cloud(settings, bigquery=args.store == ledger.BIGQUERY)
    with download_in_use(settings, ds, args.month):  # the gcs check reads the local Parquet: no purge meanwhile
        verdicts = checks.run_checks(settings, args.store, ds, args.month)
    what = f"{ds.name} {args.month} in {args.store}"
    for v in verdicts:
        figures = ", ".join(f"{k} {json.dumps(val) if isinstance(val, dict) else val}" for k, val in v.metadata.items())
        outcome = "passed" if v.passed else ("FAILED" if v.severity == checks.ERROR else "warns")
        log.log(logging.INFO if v.passed else logging.WARNING, "%s: %s %s (%s)", what, v.check, outcome, figures)
    failed = [v.check for v in verdicts if not v.passed and v.severity == checks.ERROR]
    warned = [v.check for v in verdicts if not v.passed and v.severity == checks.WARN]
    emit(
        {
            "store": args.store,
            "passed": not failed,
            "failed": failed,
            "warned": warned,
            "verdicts": {v.check: v.as_dict() for v in verdicts},
        },
        {"checks": len(verdicts), "failed": len(failed), "warned": len(warned)},
        {**_tags(ds, args.month), "store": args.store},
    )
    if failed:
        raise CheckError(f"{what}: {', '.join(failed)} failed (see the lines above)")


def cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets import ledger
    from taxi_assets.status import collect, read_holdings, read_marts, render, render_marts

    datasets = [d for d in ALL_DATASETS if (args.source in (None, d.source.name)) and (args.taxi in (None, d.taxi))]
    if not datasets:
        raise ConfigError(f"no {args.source or ''} feed {args.taxi}: see --help for the feeds")
    holdings, unavailable = read_holdings(settings, list(ledger.STORES))
    feeds = collect(settings, datasets, holdings, ask_source=not args.offline)
    marts, unread = read_marts(settings, list(holdings), sorted({d.source.name for d in datasets}))
    if args.json:
        built = {
            source: {store: {str(m): b.as_dict() for m, b in builds.items()} for store, builds in by_store.items()}
            for source, by_store in marts.items()
        }
        unavailable |= {f"marts ledger {where}": why for where, why in unread.items()}
        print(json.dumps({"feeds": [f.as_dict() for f in feeds], "marts": built, "unavailable": unavailable}, indent=1))
    else:
        print(
            "\n".join(filter(None, [render(feeds, list(holdings), unavailable), render_marts(marts, holdings, unread)]))
        )


def cmd_purge_download(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.files import local_path
    from taxi_assets.steps.extract import purge_download

    ds = _dataset(args)
    if settings.keep_downloads:
        log.info("%s %s: download kept (TAXI_KEEP_DOWNLOADS is set)", args.taxi, args.month)
        folder, removed, freed = str(local_path(settings, ds, args.month).parent), [], 0
    else:
        report = purge_download(settings, ds, args.month, when_loaded=True)
        folder, removed, freed = report.folder, report.removed, report.bytes_freed
    emit(
        {"folder": folder, "removed": removed, "bytes_freed": freed},
        {"bytes_freed": freed},
        _tags(ds, args.month),
    )


def cmd_gcp_setup(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.steps.gcp_setup import ensure_dataset
    from taxi_assets.steps.gcs import ensure_bucket

    settings = with_local_cloud(settings)

    bucket_created = ensure_bucket(settings)
    dataset_created = ensure_dataset(settings)
    emit(
        {
            "bucket": settings.gcp_bucket,
            "bucket_created": bucket_created,
            "dataset": f"{settings.gcp_project}.{settings.gcp_dataset}",
            "dataset_created": dataset_created,
        },
        {},
        {},
    )


def cmd_upload_gcs(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets import ledger
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.steps.extract import ask, download_in_use, extract
    from taxi_assets.steps.gcs import check_bucket, upload_gcs

    settings = with_local_cloud(settings, bigquery=False)

    ds = _dataset(args)
    check_bucket(settings)  # before a download and a conversion it would waste
    with download_in_use(settings, ds, args.month):
        info = extract(settings, ds, args.month)
        ask(settings, ds, args.month, ledger.BIGQUERY)  # the chain's end: kept until BigQuery holds it
        report = upload_gcs(settings, ds, args.month, Path(info.path))
    emit(report.as_dict(), {"bytes": report.bytes, "rows": report.rows}, _tags(ds, args.month))


def cmd_load_bigquery(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets import ledger
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.steps.bigquery import load_bigquery
    from taxi_assets.steps.extract import ask, download_in_use, extract

    settings = with_local_cloud(settings)

    ds = _dataset(args)
    with download_in_use(settings, ds, args.month):
        info = extract(settings, ds, args.month)
        ask(settings, ds, args.month, ledger.BIGQUERY)
        report = load_bigquery(settings, ds, args.month, info)
    emit(report.as_dict(), {"rows": report.rows}, _tags(ds, args.month), report.seconds)


def cmd_marts(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.marts import BIGQUERY, build_marts

    if args.store == BIGQUERY:
        settings = with_local_cloud(settings)
    report = build_marts(settings, args.store, args.source, args.month, refresh_dims=args.refresh_dims)
    emit(
        {
            "store": report.store,
            "schema": report.schema,
            "feeds": report.feeds,
            "rows": report.rows,
            "warned": [n.name for n in report.warnings],
            "dims_built": report.dims_built,
        },
        {f"{mart}_rows": rows for mart, rows in report.rows.items()},
        {"source": args.source, "month": str(args.month), "store": args.store},
        report.seconds,
    )


def cmd_products(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.products import fetch_products, products_url

    rows = fetch_products(products_url(), args.columns.split(","), Path(args.out))
    emit({"file": args.out, "products": rows}, {"products": rows}, {})


def cmd_avg_price(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.products import average_price_by_brand

    result = average_price_by_brand(Path(args.file))
    for brand, price in result:
        log.info("%s\t%s", brand, price)
    emit(
        {"brands": len(result), "top": [{"brand": b, "avg_price": p} for b, p in result[:5]]},
        {"brands": len(result)},
        {},
    )


def cmd_schedule_month(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.months import month_just_ended

    month = args.month or month_just_ended(args.tick)
    log.info("month %s (%s)", month, "given" if args.month else f"just ended at {args.tick.isoformat()}")
    emit({"month": str(month)}, {}, {})


def cmd_newest_month(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets import ledger
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.months import month_just_ended
    from taxi_assets.source import newest_published

    ds = _dataset(args)
    this_month = month_just_ended(datetime.now(timezone.utc)).next()  # in New York, as the sensor reckons
    found = newest_published(settings, ds, this_month)
    if found is None:
        raise ConfigError(f"{ds.name}: no month published in the last months (is {ds.source.url_variable} right?)")
    month, remote = found
    # Loaded: both stores hold the month from this very file, as Dagster's TLC sensor decides.
    origin = ledger.loaded_in_both(settings, with_local_cloud(settings), ds).get((ds.source.name, ds.taxi, month))
    same = origin is not None and remote.is_file(origin.etag, origin.bytes)
    if same:
        log.info("%s %s: newest published, already loaded from this very file (ETag %s)", ds.name, month, remote.etag)
    else:
        why = "not loaded" if origin is None else "loaded from another file (re-published since)"
        log.info("%s %s: newest published (ETag %s, %s bytes); %s", ds.name, month, remote.etag, remote.bytes, why)
    emit(
        {
            "month": str(month),
            "url": remote.url,
            "etag": remote.etag,
            "bytes": remote.bytes,
            "last_modified": remote.last_modified,
            "loaded": same,
        },
        {},
        _tags(ds, month),
    )


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.demo import run_demo

    run_demo(args.taxi, args.month, verbose=args.verbose)


def cmd_dagster_home(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.demo import dagster_home

    print(dagster_home(settings))


# Variables by which libpq would pick another server, user or database than the configured one.
def cmd_psql(args: argparse.Namespace, settings: Settings) -> int:
    from taxi_assets.psql import run_psql, show_url

    if args.url or args.tcp is not None:
        return show_url(settings, tcp_port=args.tcp)
    return run_psql(settings, args.psql_args)


def cmd_emulators(args: argparse.Namespace, settings: Settings) -> None:
    from taxi_assets.emulators import running_emulators, stop_emulators

    folder = settings.emulators_dir
    found = running_emulators(settings) if args.action == "status" else stop_emulators(settings)
    if not found:
        print(f"no embedded emulators running under {folder}")
        return
    if args.action == "status":
        print(f"embedded emulators under {folder}:")
        for emu in found:
            print(f"  {emu.name:<16} pid {emu.pid:<8} port {emu.port or '?':<6} RSS {emu.rss / 2**20:,.0f} MB")
    else:
        for emu in found:
            print(f"stopped {emu.name} (pid {emu.pid}, port {emu.port or '?'}, RSS was {emu.rss / 2**20:,.0f} MB)")


# The steps about one taxi month (--taxi, --month).
MONTH_STEPS = ("extract", "load-postgres", "purge-download", "upload-gcs", "load-bigquery", "check")

COMMANDS: dict[str, tuple[Callable, str]] = {
    "extract": (
        cmd_extract,
        "download one month's file (the mirror's .csv.gz or the TLC's .parquet; verified, atomic, cached)",
    ),
    "load-postgres": (cmd_load_postgres, "replace one month in the Postgres table (downloads it first if needed)"),
    "purge-download": (
        cmd_purge_download,
        "remove one month's download, its record and leftover partial files from the state folder once every"
        " store the month was asked of (by the steps loading it, and every store configured) holds this very file"
        " by its ledger; else keep it, naming the stores still missing (idempotent)",
    ),
    "check": (
        cmd_check,
        "run the data checks of one month in a store (the same as Dagster's asset checks): each verdict with its"
        " figures; exit 1 when a check of ERROR severity fails",
    ),
    "status": (
        cmd_status,
        "what Postgres and BigQuery hold per feed and month (rows, the file's sha256, who loaded it, when), from"
        " their ledgers: whether the source re-published a file since, whether the stores differ, which months"
        " are missing",
    ),
    "gcp-setup": (cmd_gcp_setup, "create the GCS bucket and the BigQuery dataset when missing (idempotent)"),
    "upload-gcs": (cmd_upload_gcs, "put one month in the bucket as typed Parquet (verified by crc32c, idempotent)"),
    "load-bigquery": (cmd_load_bigquery, "replace one month in the BigQuery table from the Parquet in the bucket"),
    "marts": (
        cmd_marts,
        "rebuild one month's dbt marts of a source (fct_trips, fct_monthly_zone_revenue, ...) in a store from the"
        " month's loaded rows, with dbt's tests; exit 1 when a model or a test of ERROR severity fails",
    ),
    "products": (cmd_products, "getting started: fetch products (TAXI_PRODUCTS_URL) and keep some columns"),
    "avg-price": (cmd_avg_price, "getting started: average price by brand over the kept products, with DuckDB"),
    "newest-month": (
        cmd_newest_month,
        "the newest month the source publishes for a taxi type (HEAD requests; the TLC's: its ETag and size),"
        " and whether Postgres and BigQuery both hold that month loaded from that very file (their ledgers)",
    ),
    "schedule-month": (
        cmd_schedule_month,
        "the month a schedule tick (or a run by hand) at --tick loads: the month just ended in New York",
    ),
    "demo": (cmd_demo, "materialize one month's Dagster chain on this machine and show what landed"),
    "dagster-home": (
        cmd_dagster_home,
        "print the Dagster instance folder the demo records into: $DAGSTER_HOME, else dagster/ in the state folder",
    ),
    "psql": (
        cmd_psql,
        "psql on the taxi-data Postgres (TAXI_POSTGRES_DSN, else the embedded one, started when needed); "
        "other arguments go to psql, e.g. -c 'select count(*) from green_tripdata'",
    ),
    "emulators": (
        cmd_emulators,
        "status: the embedded emulators (fake-gcs-server, bqemulator) running under the state folder, "
        "with pid, port and memory; stop: stop them",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taxi_assets",
        description="NYC taxi months into Postgres (and the cloud). Configuration: environment variables, see .env.example.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        if name == "products":
            p.add_argument("--columns", default="brand,price", help="columns to keep, comma-separated")
            p.add_argument("--out", default="products.json", help="where to write the kept products")
        elif name == "avg-price":
            p.add_argument("--file", default="products.json", help="the kept products")
        elif name == "schedule-month":
            p.add_argument("--tick", required=True, type=_instant, help="ISO date-time, e.g. Kestra's trigger.date")
            p.add_argument("--month", type=_optional_month, default=None, help="YYYY-MM to take instead (empty: none)")
        elif name == "psql":
            p.add_argument(
                "--url",
                action="store_true",
                help="print a connection URL for a GUI instead of starting psql: TAXI_POSTGRES_DSN as configured "
                "(password included, since you ask for it), or the embedded server's, kept running until Ctrl-C",
            )
            p.add_argument(
                "--tcp",
                type=int,
                metavar="PORT",
                help="with the embedded server: also serve it on 127.0.0.1:PORT (0: any free port) until Ctrl-C, "
                "for GUIs that cannot use its Unix socket; implies --url",
            )
        elif name == "emulators":
            p.add_argument("action", choices=["status", "stop"])
        elif name == "newest-month":
            _month_args(p, required=True, month=False)
        elif name in ("demo", *MONTH_STEPS):
            _month_args(p, required=name != "demo")
        if name == "status":
            p.add_argument("--source", choices=list(SOURCES), help="only this source's feeds")
            p.add_argument("--taxi", choices=TAXI_NAMES, help="only this taxi type")
            p.add_argument("--json", action="store_true", help="full records as JSON instead of the grid")
            p.add_argument("--offline", action="store_true", help="do not ask the source (no HEAD requests)")
        if name == "check":
            p.add_argument("--store", required=True, choices=CHECKED_STORES, help="the store whose month is checked")
        if name == "marts":
            p.add_argument("--month", required=True, type=_month, help="the loaded files' month, YYYY-MM")
            p.add_argument("--store", choices=STORE_NAMES, default=STORE_NAMES[0], help="default: postgres")
            p.add_argument("--source", choices=list(SOURCES), default=MIRROR.name, help="whose tables (default mirror)")
            p.add_argument("--refresh-dims", action="store_true", help="rebuild the seeds and dim_zones too")
        if name == "demo":
            p.set_defaults(taxi="green", month=Month(2019, 1))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "psql":  # the rest goes to psql, as typed (a leading `--` ends our options)
        args.psql_args = extra[1:] if extra[:1] == ["--"] else extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.verbose)  # stderr; under Kestra (TAXI_LOG_FORMAT=kestra) its log protocol
    if Path(".env").is_file():  # like `dagster dev`: a local .env fills in what the environment lacks
        from dotenv import load_dotenv

        load_dotenv(".env", override=False)
    import signal

    from taxi_assets.psql import interrupt

    signal.signal(signal.SIGTERM, interrupt)  # `docker stop`, a Kestra kill: unwind like Ctrl-C
    try:
        settings = Settings.from_env()
        return COMMANDS[args.command][0](args, settings) or 0
    except TaxiError as exc:
        print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        print_error("interrupted; nothing half-done was kept")
        return 130
    except Exception as exc:  # still one line; the traceback with --verbose
        log.debug("unexpected failure", exc_info=True)
        from taxi_assets.files import no_space

        if isinstance(exc, OSError) and (full := no_space(exc)) is not None:  # a disk filled mid-step
            print_error(full)
            return 1
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print_error(f"unexpected {type(exc).__name__}: {first}")
        return 2
