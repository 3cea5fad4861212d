"""A stand-in application for the gateway tests: echoes the request it received as JSON.

Run as ``python echo_upstream.py``: it binds a free loopback port, prints that port on
its first line of output, and answers every request with
``{"method", "path", "headers": {lower-case name: [values]}}``.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    """Every method on every path: 200 and the request line and headers as JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _echo  # noqa: N815 -- http.server's names

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read responses, not an access log."""


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
