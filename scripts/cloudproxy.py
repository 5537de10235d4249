#!/usr/bin/env python3
"""A cloud-like loopback proxy in front of an S3 emulator, for read benchmarks: each request waits
`latency_ms` before it is forwarded (first-byte latency), and each client connection's response
bytes are paced to `conn_mbps` MB/s by a token bucket of its own, 64 KiB at a time, as a single
TCP stream to real S3 is limited while more connections add up. Client connections are kept
alive (HTTP/1.1). It is s3proxy.ForwardingProxy with a paced writer per connection.

In a process of its own, its byte pumping does not share a GIL with the emulator:

    python3 scripts/cloudproxy.py --upstream-port 5000 [--latency-ms 20] [--conn-mbps 25]

prints `port N` once it listens, answers a line `bytes` on its standard input with `bytes N` (sent
to clients so far), and exits when its standard input closes (or on SIGTERM).
ProxyProcess starts it that way from Python.
"""
import argparse
import os
import subprocess
import sys
import time

from s3proxy import ForwardingProxy

CHUNK = 64 << 10
BURST = 4 * CHUNK
MB = 1_000_000


class PacedWriter:
    """A connection's output stream, sent in CHUNK pieces no faster than `rate` bytes/s: a token
    bucket BURST bytes deep, so that a thread woken late catches up (an idle connection earns no
    more than that)."""

    sent = 0  # bytes written by every connection (a GIL-atomic enough tally for a benchmark)

    def __init__(self, raw, rate):
        self.raw, self.rate, self.due = raw, rate, 0.0
        self.slack = BURST / rate if rate else 0.0

    def write(self, data):
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            piece = view[i:i + CHUNK]
            if self.rate:
                now = time.monotonic()
                if self.due > now:
                    time.sleep(self.due - now)
                else:
                    self.due = max(self.due, now - self.slack)
                self.due += len(piece) / self.rate
            self.raw.write(piece)
        PacedWriter.sent += len(view)
        return len(view)

    def __getattr__(self, name):  # flush, close, closed
        return getattr(self.raw, name)


class CloudProxy(ForwardingProxy):
    def __init__(self, upstream_port, latency_ms=20.0, conn_mbps=25.0):
        delay = latency_ms / 1000.0
        super().__init__(upstream_port, before=lambda method, path: time.sleep(delay) if delay else None)
        self.latency_ms, self.conn_mbps = latency_ms, conn_mbps
        rate = conn_mbps * MB

        class Paced(self.server.RequestHandlerClass):
            def setup(self):
                super().setup()
                self.wfile = PacedWriter(self.wfile, rate)

        self.server.RequestHandlerClass = Paced
        # A client that drops a response half read (readahead cancelled) is no error worth a trace.
        self.server.handle_error = lambda request, address: None
        # socketserver listens with a backlog of 5: a burst of new connections would see SYNs
        # dropped and retried a second later.
        self.server.socket.listen(256)


class ProxyProcess:
    """CloudProxy in a child process; `endpoint` once it listens; stop() ends it."""

    def __init__(self, upstream_port, latency_ms=20.0, conn_mbps=25.0, log=None):
        self.latency_ms, self.conn_mbps = latency_ms, conn_mbps
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--upstream-port", str(upstream_port),
             "--latency-ms", str(latency_ms), "--conn-mbps", str(conn_mbps)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            self.stop()
            raise RuntimeError(f"cloudproxy did not start: {line}")
        self.port = int(line[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def bytes_sent(self):
        """Bytes the proxy has sent to its clients so far."""
        self.proc.stdin.write("bytes\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="wait before forwarding each request")
    ap.add_argument("--conn-mbps", type=float, default=25.0, help="MB/s per client connection (0: unpaced)")
    args = ap.parse_args()
    proxy = CloudProxy(args.upstream_port, args.latency_ms, args.conn_mbps)
    print(f"port {proxy.port}", flush=True)
    # Until the parent closes standard input (or dies); a line "bytes" asks for the bytes sent.
    for line in sys.stdin:
        if line.strip() == "bytes":
            print(f"bytes {PacedWriter.sent}", flush=True)
    proxy.stop()


if __name__ == "__main__":
    main()
