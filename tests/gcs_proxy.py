"""A bucket the caller may read but not write: an HTTP proxy in front of fake-gcs-server (which has no IAM)
that forwards reads (GET, HEAD) and answers every write (POST, PUT, PATCH, DELETE) with the 403 response
real GCS sends when the credentials lack `storage.objects.create` / `storage.objects.delete`.

Clients reach it as they reach GCS: `STORAGE_EMULATOR_HOST=http://127.0.0.1:<proxy port>` (gcsfs, the
google-cloud-storage client) and `TENSORSTORE_GCS_HTTP_URL` (tensorstore, under orbax).
"""
import http.client
import http.server
import json
import threading
import urllib.parse

FORBIDDEN = {"error": {"code": 403, "message": "anonymous caller does not have storage.objects.create access to "
                                                "the Google Cloud Storage object. Permission 'storage.objects.create' "
                                                "denied on resource (or it may not exist).",
                       "errors": [{"message": "forbidden", "domain": "global", "reason": "forbidden"}]}}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}


def read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body (Content-Length or chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


class ReadOnlyProxy:
    """Serves on 127.0.0.1:<port> (`url`) until `close()`; `writes_refused` counts the 403s it sent."""

    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        proxy = self
        self.writes_refused = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def forward(self):
                body = read_body(self)
                if self.command in ("POST", "PUT", "PATCH", "DELETE"):
                    proxy.writes_refused += 1
                    data = json.dumps(FORBIDDEN).encode()
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    self.send_response(r.status, r.reason)
                    for k, v in r.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
