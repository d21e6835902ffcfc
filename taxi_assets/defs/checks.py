"""Dagster's asset checks of each month: the plain checks of `taxi_assets.checks` (the same ones
`python -m taxi_assets check` runs for Kestra), one multi-asset check per store and chain.

An ERROR check is blocking: a failed one stops the assets downstream, as it fails a Kestra
execution. WARN checks (the files' known quirks, within tolerances) only warn.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    multi_asset_check,
)

from taxi_assets import checks, ledger
from taxi_assets.datasets import TaxiDataset
from taxi_assets.defs.assets import bigquery_key, gcs_key, one_line_failures, postgres_key
from taxi_assets.defs.partitions import partitions_for
from taxi_assets.defs.resources import TaxiBigQueryResource, TaxiGcsResource, TaxiPostgresResource
from taxi_assets.months import Month


def _metadata(value):
    if isinstance(value, dict):
        return MetadataValue.json(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    return value


def result(verdict: checks.Verdict, asset: str) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=verdict.check,
        asset_key=asset,
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR if verdict.severity == checks.ERROR else AssetCheckSeverity.WARN,
        metadata={k: _metadata(v) for k, v in verdict.metadata.items()},
    )


def _specs(dataset: TaxiDataset, store: str, asset: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            spec.name,
            asset=asset,
            blocking=spec.severity == checks.ERROR,
            partitions_def=partitions_for(dataset),
            description=spec.description,
        )
        for spec in checks.specs(store)
    ]


def build_postgres_checks(dataset: TaxiDataset) -> AssetChecksDefinition:
    asset = postgres_key(dataset)

    @multi_asset_check(name=f"{dataset.name}_trips_postgres_checks", specs=_specs(dataset, ledger.POSTGRES, asset))
    @one_line_failures
    def postgres_checks(
        context: AssetCheckExecutionContext, postgres: TaxiPostgresResource
    ) -> Iterator[AssetCheckResult]:
        month = Month.parse(context.partition_key)
        with postgres.connect() as conn:
            verdicts = checks.postgres_verdicts(postgres.settings(), conn, dataset, month)
        yield from (result(v, asset) for v in verdicts)

    return postgres_checks


def build_gcs_check(dataset: TaxiDataset) -> AssetChecksDefinition:
    asset = gcs_key(dataset)

    @multi_asset_check(name=f"{dataset.name}_trips_gcs_checks", specs=_specs(dataset, checks.GCS, asset))
    @one_line_failures
    def gcs_checks(context: AssetCheckExecutionContext, gcs: TaxiGcsResource) -> Iterator[AssetCheckResult]:
        verdicts = checks.gcs_verdicts(gcs.settings(), dataset, Month.parse(context.partition_key))
        yield from (result(v, asset) for v in verdicts)

    return gcs_checks


def build_bigquery_checks(dataset: TaxiDataset) -> AssetChecksDefinition:
    asset = bigquery_key(dataset)

    @multi_asset_check(name=f"{dataset.name}_trips_bigquery_checks", specs=_specs(dataset, ledger.BIGQUERY, asset))
    @one_line_failures
    def bigquery_checks(
        context: AssetCheckExecutionContext, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource
    ) -> Iterator[AssetCheckResult]:
        month = Month.parse(context.partition_key)
        with postgres.connect() as conn:
            verdicts = checks.bigquery_verdicts(bigquery.settings(), conn, dataset, month)
        yield from (result(v, asset) for v in verdicts)

    return bigquery_checks
