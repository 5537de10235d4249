"""A misbehaving S3 in front of moto: for the requests a rule picks, it stalls before answering,
trickles the body, cuts it short (with or without saying so), sends wrong bytes, resets the
connection, answers a listing with HTML, or pages a listing forever. Everything else is forwarded
unchanged. Each fault fires a set number of times (or forever), so a test can also watch the
mount heal.

Run as a program it is the chaos run's proxy (scripts/chaos.sh): in front of one mount, it answers
a random share of requests with 503 SlowDown (before they reach the store) and resets a random
share of connections after the store has served them (mid-body when there is a body), and writes
each fault it injected as a JSON line, so that the tests can tell injected requests from the
mount's own."""
import argparse
import http.client
import json
import os
import random
import sys
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import s3log  # noqa: E402  (names the operation of each injected fault, as the tests count them)

ENDLESS_PAGE = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix></Prefix>'
                '<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>'
                '<NextContinuationToken>again</NextContinuationToken></ListBucketResult>')


class Fault:
    """`kind` is one of stall, trickle, stall_body, truncate, short, garbage, reset, html, endless,
    slowdown. `match(method, path)` selects requests; `times` limits how often (None: always)."""

    def __init__(self, kind, match, times=None, seconds=3600):
        self.kind, self.match, self.times, self.seconds = kind, match, times, seconds
        self.fired = 0


class ChaosProxy:
    def __init__(self, upstream_port, port=0, odds=None, seed=None, record=None):
        """`odds`: {kind: probability} of random faults (slowdown, reset_any) for requests no rule
        picks; each one injected is appended to the file `record` as a JSON line."""
        self.upstream_port = upstream_port
        self.faults = []
        self.odds = odds or {}
        self.rng = random.Random(seed)
        self.record = open(record, "a", buffering=1) if record else None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fault = proxy.pick(self.command, self.path, copy="x-amz-copy-source" in self.headers)
                if fault and fault.kind == "reset_any":
                    self.reset_after_upstream(body)
                    return
                if fault and fault.kind == "stall":
                    # No status line, no headers: until the client gives up (or the test ends).
                    proxy.stopping.wait(fault.seconds)
                    self.close_connection = True
                    return
                if fault and fault.kind in ("html", "endless", "slowdown"):
                    status, data, ctype = {
                        "html": (200, b"<html><body>Service temporarily in maintenance</body></html>", "text/html"),
                        "endless": (200, ENDLESS_PAGE.encode(), "application/xml"),
                        "slowdown": (503, b'<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>m</Message></Error>', "application/xml"),
                    }[fault.kind]
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                resp, data = self.upstream(body)
                out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                if self.command == "HEAD":
                    # A HEAD's Content-Length is the object's size, and it has no body.
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.end_headers()
                    return
                if fault is None or resp.status >= 300 or not data:
                    self.reply(resp.status, out_headers, data)
                    return
                half = len(data) // 2
                if fault.kind == "short":
                    self.reply(resp.status, out_headers, data[:half])
                elif fault.kind == "garbage":
                    self.reply(resp.status, out_headers, bytes(b ^ 0x5A for b in data))
                elif fault.kind in ("truncate", "reset", "stall_body", "trickle"):
                    self.send_response(resp.status)
                    for k, v in out_headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if fault.kind == "trickle":
                        for i in range(len(data)):
                            if proxy.stopping.wait(0.5):
                                break
                            try:
                                self.wfile.write(data[i:i + 1])
                                self.wfile.flush()
                            except OSError:
                                break
                        self.close_connection = True
                        return
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    if fault.kind == "stall_body":
                        proxy.stopping.wait(fault.seconds)
                    elif fault.kind == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True

            def upstream(self, body):
                """The request as the store answers it: (response, whole body)."""
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                return resp, data

            def reset_after_upstream(self, body):
                """The store serves the request; the client gets half the body (or nothing, for a
                body-less answer) and then a connection reset: as when a server dies mid-answer."""
                resp, data = self.upstream(body)
                if data and self.command != "HEAD":
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def reply(self, status, headers, data):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, kind, match, times=None, seconds=3600):
        f = Fault(kind, match, times, seconds)
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self):
        with self.lock:
            self.faults = []

    def pick(self, method, path, copy=False):
        """`copy`: the request carries x-amz-copy-source (a CopyObject or UploadPartCopy, which an
        access log cannot tell from a PutObject or UploadPart)."""
        with self.lock:
            for f in self.faults:
                if (f.times is None or f.fired < f.times) and f.match(method, path):
                    f.fired += 1
                    return f
            draw = self.rng.random() if self.odds else 1.0
            for kind, p in self.odds.items():
                if draw < p:
                    if self.record:
                        op = s3log.classify(method, path)
                        if copy:
                            op = {"PutObject": "CopyObject", "UploadPart": "UploadPartCopy"}.get(op, op)
                        self.record.write(json.dumps({"t": time.time(), "kind": kind, "op": op, "method": method, "target": path}) + "\n")
                    return Fault(kind, None)
                draw -= p
        return None

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="a proxy in front of an S3 store that injects random faults")
    ap.add_argument("--upstream", type=int, required=True, help="the store's port on 127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--slowdown", type=float, default=0.05, help="share of requests answered 503 SlowDown")
    ap.add_argument("--reset", type=float, default=0.01, help="share of connections reset after the store answered")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--record", help="JSON lines, one per fault injected")
    a = ap.parse_args()
    p = ChaosProxy(a.upstream, a.port, {"slowdown": a.slowdown, "reset_any": a.reset}, a.seed, a.record)
    print(p.port, flush=True)
    try:
        p.thread.join()
    except KeyboardInterrupt:
        pass
