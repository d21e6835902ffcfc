"""load-postgres beside readers (issue 17): a load never holds up readers of other months, says
whom it waits for, and gives up after TAXI_LOCK_WAIT with the previous rows kept. And a COPY
error names the file's line and column (each half's COPY sees only some of the lines)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, run_cli, settings_env

from taxi_assets import config
from taxi_assets.datasets import GREEN
from taxi_assets.months import Month
from taxi_assets.steps.extract import extract
from taxi_assets.steps.postgres import load_postgres

JAN, FEB, MAR = Month(2019, 1), Month(2019, 2), Month(2019, 3)


def _load(settings, month: Month) -> None:
    info = extract(settings, GREEN, month)
    with psycopg.connect(settings.postgres_dsn) as conn:
        load_postgres(conn, GREEN, month, Path(info.path))


def _month_rows(pg, month: Month) -> list[tuple]:
    return pg.execute(
        "SELECT unique_row_id, count(*) FROM green_tripdata WHERE filename = %s GROUP BY 1 ORDER BY 1",
        (GREEN.file_name(month),),
    ).fetchall()


def _long_report(dsn: str) -> psycopg.Connection:
    """A report over every month, its transaction left open: it holds January's rows."""
    report = psycopg.connect(dsn, application_name="long-report")
    report.execute("SELECT count(*) FROM green_tripdata").fetchone()
    return report


def _seconds(dsn: str, query: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as reader:
        started = time.monotonic()
        reader.execute(query).fetchone()
        return time.monotonic() - started


@pytest.fixture
def three_months(settings, pg):
    for month in (JAN, FEB, MAR):
        _load(settings, month)
    return _month_rows(pg, JAN)


def _start_load(settings, log: Path, **env) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taxi_assets", "load-postgres", "--taxi", "green", "--month", "2019-01"],
            cwd=ROOT,
            env={**os.environ, **settings_env(settings), **env},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _wait_for(text: str, log: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in log.read_text(), log.read_text()


def test_a_load_waiting_for_a_report_never_blocks_readers_of_other_months(settings, pg, three_months, tmp_path):
    report = _long_report(settings.postgres_dsn)
    log = tmp_path / "load.log"
    load = _start_load(settings, log)
    try:
        _wait_for("the swap waits for", log, load)
        # Readers of other months: by partition, and across every partition (January's too).
        for _ in range(5):
            assert _seconds(settings.postgres_dsn, f"SELECT count(*) FROM green_tripdata_{2019}_02") < 1
            assert _seconds(settings.postgres_dsn, "SELECT count(*) FROM green_tripdata WHERE filename LIKE '%03%'") < 1
            assert (
                _seconds(
                    settings.postgres_dsn, "SELECT count(*) FROM green_tripdata WHERE lpep_pickup_datetime > now()"
                )
                < 1
            )
            time.sleep(0.2)
        assert load.poll() is None, "the load did not wait for the report"
        line = next(x for x in log.read_text().splitlines() if "the swap waits for" in x)
        assert f"pid {report.info.backend_pid} (long-report, idle in transaction" in line
        assert "SELECT count(*) FROM green_tripdata" in line and "TAXI_LOCK_WAIT" in line
    finally:
        report.rollback()  # the report ends: the load goes through
        report.close()
    assert load.wait(60) == 0, log.read_text()
    assert "error" not in log.read_text()
    assert _month_rows(pg, JAN) == three_months  # the same month file, swapped in again
    assert pg.execute("SELECT count(*) FROM taxi_loads").fetchone()[0] == 4


def test_a_load_gives_up_after_the_lock_wait_and_keeps_the_previous_rows(settings, pg, three_months):
    report = _long_report(settings.postgres_dsn)
    pid = report.info.backend_pid
    try:
        started = time.monotonic()
        result = run_cli(
            "load-postgres", "--taxi", "green", "--month", "2019-01",
            env=settings_env(settings) | {config.LOCK_WAIT: "1.5"},
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        report.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[-1]]
    assert errors[0].startswith(
        "error: green 2019-01: load rolled back, previous rows untouched: gave up after waiting 1.5 s"
        " (TAXI_LOCK_WAIT) for a lock on green_tripdata_2019_01, held by"
        f" pid {pid} (long-report, idle in transaction"
    )
    assert took < 30
    assert _month_rows(pg, JAN) == three_months
    assert pg.execute("SELECT count(*) FROM taxi_loads").fetchone()[0] == 3
    assert not pg.execute("SELECT relname FROM pg_class WHERE relname LIKE '%loading%'").fetchall()


def test_a_reader_of_another_month_does_not_hold_a_load_up(settings, pg, three_months, caplog):
    reader = psycopg.connect(settings.postgres_dsn)
    reader.execute("SELECT count(*) FROM green_tripdata WHERE filename = %s", (GREEN.file_name(FEB),)).fetchone()
    try:
        started = time.monotonic()
        _load(settings, JAN)
        assert time.monotonic() - started < 10
    finally:
        reader.close()
    assert "the swap waits" not in caplog.text
    assert _month_rows(pg, JAN) == three_months


def test_a_bad_taxi_lock_wait_is_a_configuration_error(settings, pg):
    result = run_cli(
        "load-postgres",
        "--taxi",
        "green",
        "--month",
        "2019-01",
        env=settings_env(settings) | {config.LOCK_WAIT: "soon"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: TAXI_LOCK_WAIT must be a number, got 'soon'"


# COPY errors at their place in the file (issue 17, item 7).


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda fields, fare: [*fields[:fare], b"12.3.4", *fields[fare + 1 :]], ", column fare_amount: invalid input"),
        (
            lambda fields, fare: [*fields[:fare], b"7", *fields[fare:]],
            " (21 fields, the header has 20): extra data after last expected column",
        ),
    ],
    ids=["bad-value", "extra-field"],
)
def test_a_copy_error_names_the_file_s_line_and_column(settings, pg, local_release, damage, expected):
    settings = replace(settings, source_url=local_release.url)
    _load(settings, JAN)
    before = _month_rows(pg, JAN)
    served = local_release.file_for(f"/green/{GREEN.file_name(JAN)}")
    lines = gzip.decompress(served.read_bytes()).split(b"\n")
    bad = 1_234  # 0-based in `lines`: the header is line 1, so this is the file's line 1,235
    fare = [c.lower() for c in GREEN.column_names].index("fare_amount")
    lines[bad] = b",".join(damage(lines[bad].split(b","), fare))
    served.write_bytes(gzip.compress(b"\n".join(lines)))
    (settings.download_dir / "green" / (GREEN.file_name(JAN) + ".json")).unlink()  # download it again
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=settings_env(settings))
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"error: green 2019-01: load rolled back, previous rows untouched: line 1,235 of {GREEN.file_name(JAN)}"
    ), last
    assert expected in last
    assert _month_rows(pg, JAN) == before
