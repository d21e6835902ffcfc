"""A local stand-in for the release server: `{base}/{taxi}/{taxi}_tripdata_{YYYY-MM}.csv.gz`.

Serves files from a folder, to GET and HEAD (as the real host does: `newest-month` asks by HEAD);
a published month that is not there yet is generated on first request (see
`samples.mirror_data`), any other path is a 404 like the real server's. Used by the
tests, the benchmarks, CI, and anyone working offline:

    python -m taxi_assets.samples.mirror_server --port 8765 --rows 20000 --dir /tmp/taxi-source
    TAXI_SOURCE_URL=http://127.0.0.1:8765 python -m taxi_assets demo
"""

from __future__ import annotations

import argparse
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from taxi_assets.datasets import MIRROR_DATASETS
from taxi_assets.months import MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH, Month
from taxi_assets.samples.mirror_data import write_month

_PATH = re.compile(r"^/(\w+)/(\w+)_tripdata_(\d{4}-\d{2})\.csv\.gz$")


class SampleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, rows: int, host: str = "127.0.0.1", port: int = 0):
        self.root, self.rows = Path(root), rows
        self._generate_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def file_for(self, url_path: str) -> Path | None:
        m = _PATH.match(urlsplit(url_path).path)  # a query (a signed URL's) is no part of the name
        if not m or m.group(1) != m.group(2) or m.group(1) not in MIRROR_DATASETS:
            return None
        path = self.root / m.group(1) / f"{m.group(1)}_tripdata_{m.group(3)}.csv.gz"
        if not path.exists():
            month = Month.parse(m.group(3))
            if not MIRROR_FIRST_MONTH <= month <= MIRROR_LAST_MONTH:
                return None
            with self._generate_lock:
                if not path.exists():
                    tmp = path.with_suffix(".tmp")
                    write_month(tmp, MIRROR_DATASETS[m.group(1)], month, self.rows, seed=month.year * 100 + month.month)
                    tmp.rename(path)
        return path

    def start(self) -> SampleServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


class _Handler(BaseHTTPRequestHandler):
    server: SampleServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self._head()
        if path is not None:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, self.wfile)

    def do_HEAD(self) -> None:  # noqa: N802
        """What the release host answers to HEAD (`newest-month`, the demo's first look, a TLC-style
        revalidation): GET's status and headers, no body."""
        self._head()

    def _head(self) -> Path | None:
        """The status line and headers of GET and HEAD alike; the file to send, or None (404 sent)."""
        path = self.server.file_for(self.path)
        if path is None:
            self.send_error(404, "Not Found")
            return None
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        return path

    def log_message(self, format: str, *args) -> None:  # quiet: tests read their own output
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="folder of month files (created)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rows", type=int, default=20_000, help="rows in each generated month")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    server = SampleServer(args.dir, args.rows, port=args.port)
    print(f"serving {args.dir} at {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
