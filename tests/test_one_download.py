"""One download per machine (issue 20, target 5): a month is downloaded once while any flow or
asset still has a store to load it into, and purged only once every store asked for it holds
this very file by its ledger.

The steps ask for the month (`steps.extract.ask`, a file under `asks/` in the state folder) and
load it into the real stores (the test Postgres, the GCS and BigQuery emulators); purge-download
reads the ledgers those loads wrote. The last test runs both Kestra flows on Kestra's engine and
counts what the release server sent.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from helpers import dagster_resources, run_cli, settings_env, unconfigured_env
from kestra_harness import (
    GappyServer,
    Kestra,
    build,
    database_with_password,
    flows_without_marts,
    secret_env,
    stack_settings,
)

from taxi_assets import config, ledger
from taxi_assets.config import Settings
from taxi_assets.datasets import GREEN, MIRROR_DATASETS, YELLOW
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.files import ask_path, local_path
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.steps.extract import ask, asked_stores, extract, purge_download

JAN = Month(2019, 1)
FEB = Month(2019, 2)
ROWS = 2_000
FILE = GREEN.file_name(JAN)


@pytest.fixture
def release(tmp_path):
    """A release server of this test's own, counting the files it sends."""
    server = GappyServer(tmp_path / "release", rows=ROWS).start()
    yield server
    server.shutdown()


def _on(settings: Settings, release) -> Settings:
    return replace(settings, source_url=release.url)


def _step(settings: Settings, step: str, month: Month = JAN, **env: str) -> tuple[dict, str]:
    """One CLI step as a Kestra task runs it: its outputs, and its stderr."""
    result = run_cli(step, "--taxi", "green", "--month", str(month), env=settings_env(settings) | env)
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line[2:-2]) for line in result.stdout.splitlines() if line.startswith('::{"outputs"')]
    return outputs[0]["outputs"], result.stderr


def _downloads(release, month: Month = JAN) -> int:
    return release.downloads[f"/green/{GREEN.file_name(month)}"]


def _on_disk(settings: Settings, month: Month = JAN) -> bool:
    return local_path(settings, GREEN, month).is_file()


def test_the_postgres_flow_keeps_the_month_for_the_cloud_flow_and_the_last_one_purges(cloud_settings, release):
    """BigQuery configured: load-postgres then purge-download (the postgres flow) keep the file,
    naming BigQuery; the cloud flow loads that very copy; its purge-download removes it."""
    settings = _on(cloud_settings, release)
    assert _step(settings, "load-postgres")[0]["rows_loaded"] == ROWS
    kept, stderr = _step(settings, "purge-download")
    assert kept["removed"] == [] and _on_disk(settings)
    [line] = [x for x in stderr.splitlines() if "kept its download" in x]
    assert "not yet in bigquery (no load recorded); purged once postgres and bigquery hold this very file" in line

    assert run_cli("gcp-setup", env=settings_env(settings)).returncode == 0
    assert _step(settings, "upload-gcs")[0]["rows"] == ROWS
    assert _step(settings, "purge-download")[0]["removed"] == []  # uploaded, not loaded: BigQuery still lacks it
    assert _step(settings, "load-bigquery")[0]["rows"] == ROWS
    held = {s: ledger.held(settings, s, GREEN, JAN).sha256 for s in ledger.STORES}
    assert len(set(held.values())) == 1, held  # both loaded the one download
    assert _step(settings, "purge-download", **{config.KEEP_DOWNLOADS: "1"})[0]["removed"] == []  # still kept when told
    purged, stderr = _step(settings, "purge-download")
    assert FILE in purged["removed"] and not _on_disk(settings)
    assert "postgres and bigquery hold this download" in stderr and "cleared its asks (bigquery, postgres)" in stderr
    assert asked_stores(settings, GREEN, JAN) == [] and _downloads(release) == 1


def test_without_bigquery_configured_postgres_alone_decides(settings, release, caplog):
    """Only Postgres configured (TAXI_POSTGRES_DSN): asked of it, the month stays until its ledger
    holds the file; a download no load asked for goes as before."""
    settings = _on(settings, release)
    extract(settings, GREEN, JAN)
    assert FILE in purge_download(settings, GREEN, JAN, when_loaded=True).removed  # nobody asked for it

    ask(settings, GREEN, JAN, ledger.POSTGRES)
    extract(settings, GREEN, JAN)
    with caplog.at_level(logging.INFO, "taxi_assets"):
        kept = purge_download(settings, GREEN, JAN, when_loaded=True)
    assert (kept.removed, kept.waiting_for) == ([], ["postgres"]) and _on_disk(settings)
    assert "not yet in postgres (no load recorded); purged once postgres holds this very file" in caplog.text
    _step(settings, "load-postgres")
    assert FILE in _step(settings, "purge-download")[0]["removed"]
    assert _downloads(release) == 2  # once before the first purge, once after: both purges were right


def test_taxi_stores_names_the_stores_a_machine_loads(cloud_settings, release):
    """BigQuery configured, but the machine only loads Postgres (TAXI_STORES=postgres): the
    Postgres load alone lets the download go; without the setting it waits for BigQuery."""
    settings = _on(cloud_settings, release)
    assert _step(settings, "load-postgres", **{config.STORES: "postgres"})[0]["rows_loaded"] == ROWS
    assert _step(settings, "purge-download")[0]["removed"] == [] and _on_disk(settings)
    purged, stderr = _step(settings, "purge-download", **{config.STORES: "postgres"})
    assert FILE in purged["removed"] and not _on_disk(settings)
    assert "postgres holds this download" in stderr


def test_taxi_stores_is_read_in_any_case_and_order_and_a_stray_name_fails_in_one_line(settings):
    assert Settings.from_env({config.STORES: " BigQuery , postgres"}).stores == ("postgres", "bigquery")
    assert Settings.from_env({config.STORES: ""}).stores is None
    env = settings_env(settings) | {config.STORES: "postgres,bigqeury"}
    result = run_cli("purge-download", "--taxi", "green", "--month", str(JAN), env=env)
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "TAXI_STORES names bigqeury: the stores are postgres and bigquery (comma-separated)" in line


def test_a_store_holding_another_file_of_the_month_keeps_the_new_download(settings, release, caplog):
    """The source re-published the month: Postgres holds the old file, so the new download stays
    until Postgres is loaded from it."""
    settings = _on(settings, release)
    _step(settings, "load-postgres")
    _step(settings, "purge-download")
    old = ledger.held(settings, ledger.POSTGRES, GREEN, JAN).sha256
    write_month(release.file_for(f"/green/{FILE}"), GREEN, JAN, ROWS, seed=7)  # other rows, another file
    ask(settings, GREEN, JAN, ledger.POSTGRES)
    new = extract(settings, GREEN, JAN)
    assert new.downloaded and new.sha256 != old
    with caplog.at_level(logging.INFO, "taxi_assets"):
        kept = purge_download(settings, GREEN, JAN, when_loaded=True)
    assert kept.waiting_for == ["postgres"] and _on_disk(settings)
    assert f"not yet in postgres (it holds another file (sha256 {old[:12]}…, loaded " in caplog.text
    _step(settings, "load-postgres")
    assert FILE in _step(settings, "purge-download")[0]["removed"]
    assert ledger.held(settings, ledger.POSTGRES, GREEN, JAN).sha256 == new.sha256 and _downloads(release) == 2


def test_a_ledger_that_cannot_be_read_keeps_the_download(settings, release, caplog):
    unreachable = replace(_on(settings, release), postgres_dsn="postgresql://taxi:s3cret@127.0.0.1:1/ny_taxi")
    ask(unreachable, GREEN, JAN, ledger.POSTGRES)
    extract(unreachable, GREEN, JAN)
    with caplog.at_level(logging.INFO, "taxi_assets"):
        kept = purge_download(unreachable, GREEN, JAN, when_loaded=True)
    assert kept.waiting_for == ["postgres"] and _on_disk(unreachable)
    [line] = [r.getMessage() for r in caplog.records if "kept its download" in r.getMessage()]
    assert "postgres (its ledger cannot be read: cannot connect to Postgres at 127.0.0.1:1/ny_taxi" in line
    assert "s3cret" not in caplog.text


def test_dagsters_loads_ask_for_the_month_as_the_cli_steps_do(settings, release):
    """Dagster never purges; its Postgres asset asks for the month, so a Kestra purge-download on
    the same state folder keeps the file for it and removes it once Postgres holds it."""
    settings = _on(settings, release)
    month_file, postgres, _, _ = build_taxi_chain(GREEN)
    result = dg.materialize([month_file, postgres], partition_key=str(JAN), resources=dagster_resources(settings))
    assert result.success and _on_disk(settings)
    assert asked_stores(settings, GREEN, JAN) == ["postgres"]
    asked = json.loads(ask_path(settings, GREEN, JAN, ledger.POSTGRES).read_text())
    assert asked["asked_by"] == f"dagster:{result.run_id}"
    assert FILE in _step(settings, "purge-download")[0]["removed"]
    assert not ask_path(settings, GREEN, JAN, ledger.POSTGRES).exists() and _downloads(release) == 1


def test_a_purge_clears_its_months_asks_only_and_no_ask_being_written(settings):
    """The asks go with their month's download; another month's, another taxi's and an ask a live
    process is writing stay; one whose writer died goes too."""
    for dataset, month in ((GREEN, JAN), (GREEN, FEB), (YELLOW, JAN)):
        ask(settings, dataset, month, ledger.POSTGRES)
    folder = ask_path(settings, GREEN, JAN, ledger.POSTGRES).parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / f"{FILE}.bigquery.part-{dead.pid}").write_text("{}")
    (folder / f"{FILE}.bigquery.part-{os.getpid()}").write_text("{}")  # being written right now
    purge_download(settings, GREEN, JAN, when_loaded=True)  # nothing downloaded: nothing to keep
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{FILE}.bigquery.part-{os.getpid()}",
        f"{GREEN.file_name(FEB)}.postgres",
    ]
    assert asked_stores(settings, YELLOW, JAN) == ["postgres"]


# -- Through Kestra's engine ----------------------------------------------------------------------

PASSWORD = "kestra-dl-" + uuid.uuid4().hex
KEY_JSON = json.dumps({"type": "service_account", "client_email": "k@p.iam.gserviceaccount.com"})


@pytest.fixture(scope="module")
def kestra_source(tmp_path_factory):
    server = GappyServer(tmp_path_factory.mktemp("one-download-release"), rows=ROWS).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def kestra_stack(tmp_path_factory, kestra_source, pg_admin_dsn, fake_gcs, bq_emulator):
    """The stack's worker settings (Postgres, both emulators), on databases of their own."""
    with database_with_password(pg_admin_dsn, "kestra_dl", PASSWORD) as dsn:
        yield stack_settings(
            tmp_path_factory, "kestra-dl", dsn, (fake_gcs[0], bq_emulator), source_url=kestra_source.url
        )


@pytest.fixture(scope="module")
def kestra(tmp_path_factory, kestra_stack):
    stack = kestra_stack
    env = {
        config.SOURCE_URL: stack.source_url,
        config.STATE_DIR: str(stack.state_dir),
        config.HTTP_BACKOFF: "0.01",
        config.STORAGE_EMULATOR_HOST: stack.storage_emulator,
        config.BIGQUERY_EMULATOR_HOST: stack.bigquery_emulator,
        config.GCP_BUCKET_NAME: stack.gcp_bucket,
        config.GCP_DATASET: stack.gcp_dataset,
        "PATH": f"{Path(sys.executable).parent}:{unconfigured_env()['PATH']}",  # `python`: the project's
    }
    secrets = secret_env({"TAXI_POSTGRES_DSN": stack.postgres_dsn, "GCP_CREDENTIALS": KEY_JSON})
    classpath = build(tmp_path_factory.mktemp("maven") / "maven.log")
    engine = Kestra(classpath, tmp_path_factory.mktemp("kestra"), unconfigured_env() | env | secrets)
    engine.request(op="load", dir=str(flows_without_marts(tmp_path_factory.mktemp("flows"))))
    yield engine
    engine.close()


@pytest.mark.parametrize("order", [("postgres_taxi", "gcp_taxi"), ("gcp_taxi", "postgres_taxi")], ids="-then-".join)
def test_both_kestra_flows_for_one_month_make_one_download(kestra, kestra_stack, kestra_source, order):
    """postgres_taxi and gcp_taxi for one month, one after the other, in either order, on Kestra's
    engine: the first keeps the download (naming the store it waits for), the second loads that
    very copy and purges it. The release server sent the month once."""
    month = {"postgres_taxi": Month(2019, 6), "gcp_taxi": Month(2019, 7)}[order[0]]
    assert kestra.run("gcp_setup").state == "SUCCESS"
    first = kestra.run(order[0], {"taxi": "green", "month": str(month)})
    assert first.state == "SUCCESS", first
    waiting = "bigquery" if order[0] == "postgres_taxi" else "postgres"
    assert first.outputs("purge_download")["vars"]["removed"] == [] and _on_disk(kestra_stack, month)
    assert f"kept its download: not yet in {waiting} (no load recorded)" in first.log_text("purge_download"), first
    second = kestra.run(order[1], {"taxi": "green", "month": str(month)})
    assert second.state == "SUCCESS", second
    assert GREEN.file_name(month) in second.outputs("purge_download")["vars"]["removed"], second
    assert not _on_disk(kestra_stack, month) and asked_stores(kestra_stack, GREEN, month) == []
    held = {s: ledger.held(kestra_stack, s, MIRROR_DATASETS["green"], month) for s in ledger.STORES}
    assert held["postgres"].sha256 == held["bigquery"].sha256 and held["postgres"].rows == ROWS
    assert {r.loaded_by for r in held.values()} == {f"kestra:{first.data['id']}", f"kestra:{second.data['id']}"}
    assert _downloads(kestra_source, month) == 1
