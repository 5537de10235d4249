"""A loopback HTTP proxy in front of an S3 emulator, streaming bodies through. A `before` hook
sees each request first: it may sleep (latency, as real S3 has) or answer with an S3 error
itself (fault injection). Shared by the benchmark and the integration tests."""
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{}</Code><Message>injected</Message></Error>'


class ForwardingProxy:
    def __init__(self, upstream_port, before=None, inspect=None, rewrite=None):
        """`before(method, path)` returns None to forward the request, or (status, code) to
        answer it with that S3 error instead. `inspect(method, path, headers, body)` does the same
        once the body is read (checks on headers and bytes). `rewrite(method, path, body)` returns
        the body to answer with instead of the store's (an endpoint that lies)."""
        proxy = self
        self.upstream_port = upstream_port
        self.before = before
        self.inspect = inspect
        self.rewrite = rewrite

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm the body of a
            # small answer would wait for the client's delayed ACK of the headers (40 ms more).
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                fault = proxy.before(self.command, self.path) if proxy.before else None
                if not fault and proxy.inspect:
                    fault = proxy.inspect(self.command, self.path, self.headers, body)
                if fault:
                    data = ERROR.format(fault[1]).encode()
                    self.send_response(fault[0])
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                c = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=300)
                c.request(self.command, self.path, body=body,
                          headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                r = c.getresponse()
                self.send_response(r.status)
                length = r.getheader("Content-Length")
                rewritten = proxy.rewrite is not None and self.command != "HEAD"
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and not (rewritten and k.lower() == "content-length"):
                        self.send_header(k, v)
                if length is None or rewritten:
                    data = r.read()
                    if rewritten:
                        data = proxy.rewrite(self.command, self.path, data)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                else:
                    self.end_headers()
                    while self.command != "HEAD":
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                c.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
