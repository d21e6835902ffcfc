"""The marts' build ledger: which months of a source's marts a store holds, built by whom.

Each build of a month (`marts.build_marts`: the CLI, Kestra; the Dagster asset, which runs dbt
itself) appends a row to `taxi_marts_builds` beside the marts (the Postgres schema or BigQuery
dataset `marts.marts_schema`): the month, each monthly mart's rows, who built it
(`ledger.loaded_by`: "cli", "kestra:<execution>", "dagster:<run>") and when. Like the loads'
ledger it lives in the stores, so whichever orchestrator built a month, the other sees it: the
component's sensor reports the builds Dagster did not make as materializations of the month.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from taxi_assets import ledger
from taxi_assets.config import Settings
from taxi_assets.months import Month

TABLE = "taxi_marts_builds"
COLUMNS = ("source", "month", "rows", "code_version", "built_at", "built_by")
_PG_TYPES = {"month": "date", "built_at": "timestamptz"}
_BQ_TYPES = {"month": "DATE", "built_at": "TIMESTAMP"}


@dataclass(frozen=True)
class MartsBuild:
    """One build of one month of a source's marts in one store."""

    source: str
    month: str  # YYYY-MM: the files' month
    rows: dict[str, int]  # each monthly mart's rows of the month
    code_version: str
    built_at: datetime
    built_by: str  # "cli", "dagster:<run id>", "kestra:<execution id>"

    @property
    def orchestrator(self) -> str:
        return ledger.orchestrator_of(self.built_by)

    @property
    def run_id(self) -> str:
        return ledger.run_id_of(self.built_by)

    def as_dict(self) -> dict:
        return {**asdict(self), "built_at": self.built_at.isoformat()}


def build(source: str, month: Month, rows: dict[str, int], *, by: str | None = None) -> MartsBuild:
    """The record of building `source`'s marts of `month` now (by `by`: default `ledger.loaded_by`)."""
    return MartsBuild(
        source=source,
        month=str(month),
        rows=dict(rows),
        code_version=ledger.code_version(),
        built_at=datetime.now(timezone.utc),
        built_by=by or ledger.loaded_by(),
    )


def _values(entry: MartsBuild) -> dict:
    return {
        "source": entry.source,
        "month": f"{entry.month}-01",
        "rows": json.dumps(entry.rows, sort_keys=True),
        "code_version": entry.code_version,
        "built_at": entry.built_at,
        "built_by": entry.built_by,
    }


def _from_row(row) -> MartsBuild:
    values = dict(zip(COLUMNS, row, strict=True))
    values["month"] = ledger.stored_month(values["month"])
    values["rows"] = json.loads(values["rows"])
    values["built_at"] = values["built_at"].astimezone(timezone.utc)
    return MartsBuild(**values)


def write(settings: Settings, store: str, schema: str, entry: MartsBuild) -> None:
    """Append `entry` to the ledger in the marts' `schema` (made by the build) of `store`."""
    if store == ledger.POSTGRES:
        from psycopg import sql

        from taxi_assets import database

        table = sql.Identifier(schema, TABLE)
        with database.connect(settings) as conn:
            # Two months built at once (a backfill) both create it: IF NOT EXISTS alone races.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('taxi_assets'), hashtext(%s))", (f"{schema}.{TABLE}",))
            ledger.create_postgres_table(conn, table, COLUMNS, _PG_TYPES)
            conn.execute(
                sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
                    t=table,
                    c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                    v=sql.SQL(", ").join(sql.Placeholder(c) for c in COLUMNS),
                ),
                _values(entry),
            )
        return
    from taxi_assets.gcp import bigquery_client

    client, name = bigquery_client(settings), _bigquery_table(settings, schema)
    ledger.create_bigquery_table(client, name, COLUMNS, _BQ_TYPES)
    values = _values(entry)
    literals = [f"DATE '{values[c]}'" if c == "month" else ledger.bigquery_literal(values[c]) for c in COLUMNS]
    query = f"INSERT INTO `{name}` ({', '.join(COLUMNS)}) VALUES ({', '.join(literals)})"
    client.query(query).result(timeout=settings.bigquery_timeout)


def _bigquery_table(settings: Settings, schema: str) -> str:
    return f"{settings.gcp_project}.{schema}.{TABLE}"


def builds(settings: Settings, store: str, schema: str) -> dict[Month, MartsBuild]:
    """Each month's newest build recorded in the marts' `schema` of `store` (none before the first).
    BigQuery's `settings` must name a running BigQuery (`ledger.bigquery_available`)."""
    if store == ledger.POSTGRES:
        from psycopg import sql

        from taxi_assets import database

        with database.connect(settings) as conn:
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{TABLE}',)).fetchone()[0] is None:
                return {}
            query = sql.SQL("SELECT {c} FROM {t} ORDER BY id").format(
                c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), t=sql.Identifier(schema, TABLE)
            )
            found = [_from_row(row) for row in conn.execute(query).fetchall()]
    else:
        from google.api_core import exceptions as gexc
        from google.cloud.bigquery import DEFAULT_RETRY

        from taxi_assets.gcp import bigquery_client

        retry = DEFAULT_RETRY.with_deadline(ledger.READ_DEADLINE)
        query = f"SELECT {', '.join(COLUMNS)} FROM `{_bigquery_table(settings, schema)}`"
        try:
            rows = bigquery_client(settings).query(query, retry=retry, job_retry=None)
            rows = rows.result(retry=retry, timeout=ledger.READ_DEADLINE)
        except gexc.NotFound:
            return {}
        found = sorted((_from_row([row[c] for c in COLUMNS]) for row in rows), key=lambda b: b.built_at)
    return {Month.parse(entry.month): entry for entry in found}
