#!/usr/bin/env python3
"""A small SQS queue server on loopback, for measuring how fast a mount applies events: moto's SQS
spends time in proportion to the queue's length on every call (a ReceiveMessage takes 0.85 s with
2,000 messages queued), so it cannot hold a burst of 10,000. This one answers the AWS JSON 1.0
calls the mount and the benchmark make (SendMessage, SendMessageBatch, ReceiveMessage with long
polling and ApproximateReceiveCount, DeleteMessageBatch, GetQueueAttributes), keeps received
messages invisible for 30 s, and checks no signature. Test and benchmark use only.

    server = MiniSQS(); url = server.queue_url("q"); ...; server.stop()
"""
import collections
import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VISIBILITY = 30.0


class Queue:
    def __init__(self):
        self.ready = collections.deque()  # (id, body, receive_count)
        self.inflight = {}  # receipt handle -> (id, body, receive_count, visible_again_at)
        self.cond = threading.Condition()
        self.checked = 0.0

    def send(self, bodies):
        with self.cond:
            ids = []
            for body in bodies:
                mid = str(uuid.uuid4())
                self.ready.append((mid, body, 0))
                ids.append(mid)
            self.cond.notify_all()
            return ids

    def _requeue_expired(self, now):
        for handle, (mid, body, count, until) in list(self.inflight.items()):
            if until <= now:
                del self.inflight[handle]
                self.ready.appendleft((mid, body, count))

    def receive(self, n, wait):
        deadline = time.time() + wait
        with self.cond:
            while True:
                now = time.time()
                if self.inflight and now - self.checked > 1:
                    self.checked = now
                    self._requeue_expired(now)
                if self.ready or now >= deadline:
                    break
                self.cond.wait(min(0.5, deadline - now))
            out = []
            while self.ready and len(out) < n:
                mid, body, count = self.ready.popleft()
                handle = f"{mid}.{next(_handles)}"
                self.inflight[handle] = (mid, body, count + 1, now + VISIBILITY)
                out.append((mid, body, handle, count + 1))
            return out

    def delete(self, handles):
        with self.cond:
            return [h for h in handles if self.inflight.pop(h, None) is None]


_handles = itertools.count(1)


class MiniSQS:
    def __init__(self, latency=0.0):
        """`latency`: seconds added to each answer (a cloud-like profile: SQS answers in about 20 ms)."""
        self.latency = latency
        self.queues = collections.defaultdict(Queue)
        self.calls = collections.Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go in two writes: without this, Nagle and delayed ACKs add 40 ms to each call.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "").split(".")[-1]
                outer.calls[target] += 1
                if outer.latency:
                    time.sleep(outer.latency)
                status, answer = outer.handle(target, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a long poll whose caller left (an unmount)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a caller that hung up (an unmount during a long poll)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def queue_url(self, name):
        return f"http://127.0.0.1:{self.port}/123456789012/{name}"

    def queue(self, url):
        return self.queues[url.rstrip("/").rsplit("/", 1)[-1]]

    def handle(self, target, body):
        url = body.get("QueueUrl", "")
        q = self.queue(url)
        if target == "SendMessage":
            return 200, {"MessageId": q.send([body["MessageBody"]])[0]}
        if target == "SendMessageBatch":
            ids = q.send([e["MessageBody"] for e in body["Entries"]])
            return 200, {"Successful": [{"Id": e["Id"], "MessageId": i} for e, i in zip(body["Entries"], ids)], "Failed": []}
        if target == "ReceiveMessage":
            got = q.receive(min(10, int(body.get("MaxNumberOfMessages", 1))), min(20, int(body.get("WaitTimeSeconds", 0))))
            return 200, {"Messages": [{"MessageId": m, "Body": b, "ReceiptHandle": h, "Attributes": {"ApproximateReceiveCount": str(c)}}
                                      for m, b, h, c in got]}
        if target == "DeleteMessageBatch":
            refused = set(q.delete([e["ReceiptHandle"] for e in body["Entries"]]))
            return 200, {"Successful": [{"Id": e["Id"]} for e in body["Entries"] if e["ReceiptHandle"] not in refused],
                         "Failed": [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}
                                    for e in body["Entries"] if e["ReceiptHandle"] in refused]}
        if target == "GetQueueAttributes":
            with q.cond:
                return 200, {"Attributes": {"ApproximateNumberOfMessages": str(len(q.ready)),
                                            "ApproximateNumberOfMessagesNotVisible": str(len(q.inflight))}}
        return 400, {"__type": "com.amazonaws.sqs#InvalidAction", "message": f"{target} is not served here"}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
