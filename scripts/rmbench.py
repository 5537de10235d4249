#!/usr/bin/env python3
"""`rm -r` of a directory of N small files (default 1,000) through s3mount on moto, behind
scripts/cloudproxy.py (20 ms before each request by default, as a round trip to real S3): the
seconds rm takes, and the requests the daemon sent (its own `s3mount stats`). S3 is checked to hold
none of the keys when rm returns.

    S3MOUNT_BIN=.build/release/s3mount python3 scripts/rmbench.py [--files 1000] [--latency-ms 20]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                sys.exit("moto_server exited at start")
            time.sleep(0.1)
    sys.exit("moto_server did not start within 30 s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()
    binary = os.environ.get("S3MOUNT_BIN", ".build/release/s3mount")
    work = tempfile.mkdtemp(prefix="rmbench-")
    env = dict(os.environ, **CREDS, AWS_EC2_METADATA_DISABLED="true")
    port = free_port()
    moto = subprocess.Popen([shutil.which("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    proxy = None
    mp = os.path.join(work, "mnt")
    os.mkdir(mp)
    try:
        wait_port(port, moto)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        s3.create_bucket(Bucket="rmbench")
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda i: s3.put_object(Bucket="rmbench", Key=f"todelete/f{i:05d}", Body=b"x" * 100), range(args.files)))
        proxy = subprocess.Popen([sys.executable, os.path.join(HERE, "cloudproxy.py"), "--upstream-port", str(port),
                                  "--latency-ms", str(args.latency_ms), "--conn-mbps", "0"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proxy_port = int(proxy.stdout.readline().split()[1])
        subprocess.run([binary, "rmbench", mp, "--endpoint-url", f"http://127.0.0.1:{proxy_port}", "--force-path-style",
                        "--log-file", os.path.join(work, "s3mount.log")], env=env, check=True, timeout=60)
        assert len(os.listdir(os.path.join(mp, "todelete"))) == args.files

        def requests():
            out = subprocess.run([binary, "stats", mp], capture_output=True, text=True, check=True)
            return {op: v["total"] for op, v in json.loads(out.stdout)["requests"].items()}
        before = requests()
        t0 = time.time()
        subprocess.run(["rm", "-r", os.path.join(mp, "todelete")], check=True, timeout=600)
        secs = time.time() - t0
        left = s3.list_objects_v2(Bucket="rmbench", Prefix="todelete/").get("KeyCount", 0)
        after = requests()
        d = {op: after.get(op, 0) - before.get(op, 0) for op in after if after.get(op, 0) != before.get(op, 0)}
        print(json.dumps({"files": args.files, "latency_ms": args.latency_ms, "seconds": round(secs, 2),
                          "requests": sum(d.values()), "by_type": d, "keys_left_when_rm_returned": left}))
    finally:
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        if proxy:
            proxy.stdin.close()
            proxy.wait(10)
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
