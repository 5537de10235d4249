"""Injects S3-side failures in front of moto: PUTs of keys containing "fail-me" always get 500
InternalError; the first two PUTs of keys containing "flaky" get 503 SlowDown; deletes of keys
containing "deny-delete" get 403 AccessDenied (a DeleteObject, and a DeleteObjects that names
one: refused whole). Everything else is forwarded unchanged (scripts/s3proxy.py)."""
import threading

from s3proxy import ForwardingProxy


class FaultProxy(ForwardingProxy):
    def __init__(self, upstream_port):
        self.lock = threading.Lock()
        self.flaky_left = 2
        self.injected = []
        super().__init__(upstream_port, before=self.fault, inspect=self.refuse_batch)

    def fault(self, method, path):
        fault = None
        if method == "PUT" and "fail-me" in path:
            fault = (500, "InternalError")
        elif method == "DELETE" and "deny-delete" in path:
            fault = (403, "AccessDenied")
        elif method == "PUT" and "flaky" in path:
            with self.lock:
                if self.flaky_left > 0:
                    self.flaky_left -= 1
                    fault = (503, "SlowDown")
        if fault:
            with self.lock:
                self.injected.append((method, path, fault[0]))
        return fault

    def refuse_batch(self, method, path, headers, body):
        if method == "POST" and "delete" in path and body and b"deny-delete" in body:
            with self.lock:
                self.injected.append((method, path, 403))
            return (403, "AccessDenied")
        return None
