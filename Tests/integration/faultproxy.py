"""A loopback HTTP proxy in front of moto that injects S3-side failures by rule:
PUTs of keys containing "fail-me" always get 500 InternalError; the first two PUTs of keys
containing "flaky" get 503 SlowDown. Everything else is forwarded unchanged."""
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>'


class FaultProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.flaky_left = 2
        self.injected = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = None
                if self.command == "PUT" and "fail-me" in self.path:
                    fault = (500, b"InternalError")
                elif self.command == "PUT" and "flaky" in self.path:
                    with proxy.lock:
                        if proxy.flaky_left > 0:
                            proxy.flaky_left -= 1
                            fault = (503, b"SlowDown")
                if fault:
                    with proxy.lock:
                        proxy.injected.append((self.command, self.path, fault[0]))
                    data = ERROR % fault[1]
                    self.send_response(fault[0])
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
