# The project's image: the Dagster webserver and daemon (and the emulators of the `emulators`
# profile) in docker-compose.yaml. Build: `docker compose build`.
FROM python:3.11.14-slim-bookworm

# TAXI_EMBEDDED=0: a step never starts an embedded Postgres or emulator here (a missing DSN is an error).
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    TAXI_STATE_DIR=/app/state \
    TAXI_EMBEDDED=0

RUN useradd --create-home --uid 1000 --user-group dagster
WORKDIR /app

# Dependencies first, from the lock (its runtime half: no test tools), so a code change reinstalls
# only the project. Hash-checked and --no-deps: the lock is the whole resolution. The project itself
# is built with the locked setuptools; pip check then proves nothing is missing.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY taxi_assets ./taxi_assets
RUN pip install --no-deps --no-build-isolation . \
 && pip check
# The compiled loops (taxi_assets/compiled.py) built once, here, into a cache the containers'
# user may write: their first extract or load does not wait for numba.
ENV NUMBA_CACHE_DIR=/app/numba-cache
RUN python -m taxi_assets.compiled \
 && chown -R 1000:1000 ${NUMBA_CACHE_DIR}

COPY workspace.yaml ./
COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
# Downloads, step logs and embedded emulators (state), and the `emulators` profile's data:
# compose mounts named volumes here, which start with these owners.
RUN mkdir -p ${TAXI_STATE_DIR} /app/emulators \
 && chown -R 1000:1000 ${TAXI_STATE_DIR} /app/emulators ${DAGSTER_HOME}
VOLUME ["/app/state", "/app/emulators"]

USER 1000:1000
# bqemulator loads DuckDB's spatial extension at start: from its wheel, now, not from the internet.
RUN python -c "from duckdb_extensions import import_extension; import_extension('spatial')"

EXPOSE 3000
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
