#!/usr/bin/env python3
"""Time to error (or to success) of everyday commands on a mount whose store misbehaves, with the
mount's default deadlines and retry budgets (issue 15). Each fault is injected by the chaos proxy
(Tests/integration/chaosproxy.py) in front of a local moto_server; prints a Markdown table.
    python3 scripts/faulttimes.py [--bin .build/debug/s3mount]"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Tests", "integration"))
from chaosproxy import ChaosProxy  # noqa: E402
import conftest  # noqa: E402


def timed(cmd, timeout=600):
    t0 = time.time()
    try:
        out = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace", timeout=timeout)
        rc, err = out.returncode, out.stderr.strip().splitlines()[-1:] or [""]
    except subprocess.TimeoutExpired:
        rc, err = None, [f"still running at {timeout} s"]
    return time.time() - t0, rc, err[0][:60]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", ".build", "debug", "s3mount"))
    a = ap.parse_args()
    conftest.BIN = os.path.abspath(a.bin)
    work = tempfile.mkdtemp()
    moto = conftest.Moto(work)
    s3 = moto.client()
    rows = []
    try:
        def fresh(name):
            s3.create_bucket(Bucket=name)
            s3.put_object(Bucket=name, Key="f", Body=os.urandom(200_000))
            s3.put_object(Bucket=name, Key="big", Body=os.urandom(6 << 20))
            chaos = ChaosProxy(moto.port)
            m = conftest.Mount(moto, name, work, ["--endpoint-url", chaos.endpoint])
            return chaos, m
        get = lambda key: (lambda method, path: method == "GET" and path.split("?")[0].endswith("/" + key))
        lst = lambda method, path: method == "GET" and "list-type=2" in path
        puts = lambda method, path: method == "PUT"
        for name, kind, match, cmd, setup in [
            ("server sends no headers", "stall", get("f"), "cat {m}/f", None),
            ("body trickles at 2 B/s", "trickle", get("f"), "cat {m}/f", None),
            ("body stalls midway", "stall_body", get("big"), "cat {m}/big", None),
            ("listing never answers", "stall", lst, "ls {m}/", None),
            ("listing pages forever", "endless", lst, "ls {m}/", None),
            ("200 with an HTML page for a listing", "html", lst, "ls {m}/", None),
            ("body cut short (Content-Length honest)", "short", get("f"), "cat {m}/f", None),
            ("garbage bytes, 200 KB object (MD5 ETag)", "garbage", get("f"), "cat {m}/f", None),
        ]:
            chaos, m = fresh(f"ft-{len(rows)}-{int(time.time())}")
            if not cmd.startswith("ls"):
                os.listdir(m.path)  # the listing is known: only the read meets the fault
            chaos.add(kind, match)
            try:
                secs, rc, err = timed(cmd.format(m=m.path))
                rows.append((name, f"{secs:.1f} s", "exit %s" % rc, err))
            finally:
                chaos.clear()
                m.unmount()
                chaos.stop()
        # Uploads: trouble that lasts, then heals.
        for name, kind, times in [("12 SlowDowns in a row on the upload", "slowdown", 12), ("connection reset after the store took the upload", "reset_any", 1)]:
            chaos, m = fresh(f"ft-{len(rows)}-{int(time.time())}")
            chaos.add(kind, puts, times=times)
            try:
                secs, rc, err = timed(f"head -c 100000 /dev/urandom > {m.path}/up")
                rows.append((name, f"{secs:.1f} s", "exit %s" % rc, err))
            finally:
                m.unmount()
                chaos.stop()
    finally:
        moto.stop()
    print("| fault | time | result | message |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
