"""Serving Prometheus metrics: `start_metrics_server(host, port)` -> a handle with `.port` and `stop()`.

A small threaded WSGI server (the standard library's, as prometheus_client's own
`start_http_server` uses) on a thread of its own, so a busy event loop never
delays a scrape. Paths: `/metrics` (the text exposition format) and `/healthz`
(200 `ok`, for container health checks); anything else is 404.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape on stderr is noise


def _app(registry: CollectorRegistry) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: metrics are on /metrics\n"]

    return app


class MetricsServer:
    """A running metrics server. `stop()` closes the socket and joins the thread; it is idempotent."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        self.host: str = str(server.server_address[0])
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MetricsServer(url={self.url!r})"


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Bind host:port (port 0 picks a free one: read `.port`) and serve until `stop()`.
    A port already in use raises OSError here, not later."""
    bind_host = host.strip("[]")
    server_class = type(
        "_MetricsServer", (_Server,), {"address_family": socket.AF_INET6 if ":" in bind_host else socket.AF_INET}
    )
    server: WSGIServer = make_server(
        bind_host, port, _app(registry), server_class=server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"metrics-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)
