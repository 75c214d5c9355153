"""An HTTP/1.1 keep-alive front for moto's server: ``python keep_alive_proxy.py PORT TARGET``.

Werkzeug (under moto's server) closes every connection after one response, so a client
that shares its pooled sockets with a forked child never shows it there: each request
gets a fresh socket. SQS keeps connections open. This proxy does too: it serves many
requests per client connection (HTTP/1.1, always with Content-Length) and forwards each
one to ``TARGET`` (moto) unchanged, so a socket inherited by two processes carries both
their requests and answers, as it would against AWS.
"""

from __future__ import annotations

import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    target: tuple[str, int] = ("127.0.0.1", 0)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        upstream = http.client.HTTPConnection(*self.target, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() not in ("server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the proxy's log is of no use to the tests."""


def main() -> None:
    port, target = int(sys.argv[1]), urlsplit(sys.argv[2])
    _Forward.target = (target.hostname or "127.0.0.1", target.port or 80)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Forward)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
