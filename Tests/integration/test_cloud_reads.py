"""Reads at cloud speed: a sequential reader on a link capped per connection goes on with ranged
parts in parallel; the local data cache answers a second read without a request and never with
stale bytes; walks through a directory read the next files ahead, within their window."""
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, STORE, delta, run, seed

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cloudproxy import ProxyProcess  # noqa: E402


@pytest.fixture()
def cloud(moto):
    """A cloud-like endpoint: 5 ms before each request, 40 MB/s per connection."""
    p = ProxyProcess(moto.port, latency_ms=5, conn_mbps=40)
    yield p
    p.stop()


def gets_for(moto, pos, bucket, key):
    return [r for r in moto.requests_since(pos, bucket) if r[0] == "GetObject" and r[2].split("?")[0] == f"/{bucket}/{key}"]


def test_a_capped_link_reads_96_mib_with_parts_in_flight(moto, s3, bucket, mount, cloud):
    data = os.urandom(96 << 20)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    m = mount(bucket, "--endpoint-url", cloud.endpoint)
    pos = moto.log_position()
    run("echo 3 > /proc/sys/vm/drop_caches")
    t0 = time.time()
    out = run(f"cat {m.path}/big.bin | sha256sum", timeout=300)
    secs = time.time() - t0
    assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    gets = gets_for(moto, pos, bucket, "big.bin")
    reads = m.stats()["reads"]
    # One stream measured the link at 40 MB/s; the rest came as ranged parts, several at once.
    assert reads["parallel_readers"] == 1 and reads["parts"] >= 8, reads
    assert len(gets) == reads["parts"] + 1, (len(gets), reads)
    assert reads["read_memory_bytes"] == 0
    print(f"96 MiB through a 40 MB/s-per-connection link: {len(data) / secs / 1e6:.0f} MB/s, {len(gets)} GETs")


@pytest.mark.moto_only("RGW serves a stream's first 4 MiB near the 300 MB/s that keeps one stream on this 2-core VM: "
                       "measured on 7 Dec 2026: 2 runs of 3 below it with fc9b22f's binary, 1 of 3 with today's; the "
                       "verdict there is the link's, not the mount's (moto is well above it)")
def test_one_stream_stays_where_one_connection_is_fast(moto, s3, bucket, mount):
    data = os.urandom(64 << 20)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    m = mount(bucket)
    os.listdir(m.path)
    before = m.requests()
    out = run(f"cat {m.path}/big.bin | sha256sum", timeout=120)
    assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    got = (delta(before, m.requests()), m.stats()["reads"]["parallel_readers"])
    assert got == ({"GetObject": 1}, 0)


def test_second_read_comes_from_the_cache_even_after_a_remount(moto, s3, bucket, mount, tmp_path):
    files = {f"docs/f{i}.bin": os.urandom(3 << 20 if i == 0 else 20_000 + i) for i in range(5)}
    seed(s3, bucket, list(files.items()))
    cache = tmp_path / "cache"
    m = mount(bucket, "--cache", str(cache))
    for k, v in files.items():
        assert open(os.path.join(m.path, k), "rb").read() == v
    run("echo 3 > /proc/sys/vm/drop_caches")
    before = m.requests()
    for k, v in files.items():
        assert open(os.path.join(m.path, k), "rb").read() == v
    assert delta(before, m.requests()).get("GetObject", 0) == 0
    assert m.stats()["reads"]["data_cache"]["hits"] >= 1  # the small ones may come from the last seconds' reads
    m.unmount()
    m2 = mount(bucket, "--cache", str(cache))
    pos = moto.log_position()
    for k, v in files.items():
        assert open(os.path.join(m2.path, k), "rb").read() == v
    assert [r for r in moto.requests_since(pos, bucket) if r[0] in ("GetObject", "HeadObject")] == []


def test_a_changed_object_is_never_served_from_the_cache(moto, s3, bucket, mount, tmp_path):
    s3.put_object(Bucket=bucket, Key="note.txt", Body=b"version one\n")
    m = mount(bucket, "--cache", str(tmp_path / "c"), "--metadata-ttl", "1")
    assert open(os.path.join(m.path, "note.txt"), "rb").read() == b"version one\n"
    s3.put_object(Bucket=bucket, Key="note.txt", Body=b"version two\n")  # same size, new ETag
    time.sleep(1.5)
    run("echo 3 > /proc/sys/vm/drop_caches")
    assert open(os.path.join(m.path, "note.txt"), "rb").read() == b"version two\n"


def test_a_full_cache_evicts_and_keeps_working(moto, s3, bucket, mount, tmp_path):
    files = {f"f{i}.bin": os.urandom(3 << 20) for i in range(6)}
    seed(s3, bucket, list(files.items()))
    cache = tmp_path / "c"
    m = mount(bucket, "--cache", str(cache), "--max-cache-size", "8M")
    for k, v in files.items():
        assert open(os.path.join(m.path, k), "rb").read() == v
    used = int(run(f"du -sb {cache}").stdout.split()[0])
    assert used <= (8 << 20) + (1 << 20), used
    assert m.stats()["reads"]["data_cache"]["evictions"] > 0
    run("echo 3 > /proc/sys/vm/drop_caches")
    before = m.requests()
    assert open(os.path.join(m.path, "f0.bin"), "rb").read() == files["f0.bin"]
    assert delta(before, m.requests()).get("GetObject", 0) >= 1, "the evicted object is read from S3 again"


def test_a_cache_on_a_full_disk_falls_back_to_s3(moto, s3, bucket, mount, tmp_path):
    small = tmp_path / "tiny"
    small.mkdir()
    run(f"mount -t tmpfs -o size=1m tmpfs {small}")
    try:
        data = os.urandom(6 << 20)
        s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
        m = mount(bucket, "--cache", str(small / "c"))
        out = run(f"cat {m.path}/big.bin | sha256sum")
        assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
        run("echo 3 > /proc/sys/vm/drop_caches")
        out = run(f"cat {m.path}/big.bin | sha256sum")
        assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
        assert m.stats()["reads"]["data_cache"]["write_errors"] >= 1
        m.unmount()
    finally:
        run(f"umount {small}")


def test_tar_of_a_directory_reads_ahead_with_one_get_per_file(moto, s3, bucket, mount, cloud):
    files = {f"src/f{i:04d}.txt": os.urandom(4000 + i) for i in range(300)}
    seed(s3, bucket, list(files.items()))
    m = mount(bucket, "--endpoint-url", cloud.endpoint)
    os.listdir(os.path.join(m.path, "src"))
    before = m.requests()
    out = subprocess.run(f"tar cf - -C {m.path} src | tar tvf - | wc -l", shell=True, capture_output=True, text=True, timeout=300)
    assert int(out.stdout.strip()) == len(files) + 1
    d = delta(before, m.requests())
    assert d.get("GetObject", 0) <= len(files) * 1.05, d
    reads = m.stats()["reads"]
    assert reads["walk_used"] >= len(files) - 10, reads


def test_walk_read_ahead_stops_within_its_window(moto, s3, bucket, mount):
    files = {f"w/f{i:03d}": os.urandom(1000) for i in range(100)}
    seed(s3, bucket, list(files.items()))
    m = mount(bucket, "--walk-read-ahead", "8")
    names = sorted(os.listdir(os.path.join(m.path, "w")))
    pos = moto.log_position()
    for n in names[:20]:
        assert open(os.path.join(m.path, "w", n), "rb").read() == files["w/" + n]
    time.sleep(1)
    gets = [r for r in moto.requests_since(pos, bucket) if r[0] == "GetObject"]
    assert 20 <= len(gets) <= 20 + 8, len(gets)
    assert len({r[2] for r in gets}) == len(gets), "no file fetched twice"


def test_sniffing_a_folder_costs_a_small_read_per_file(moto, s3, bucket, mount, cloud):
    """A file manager guessing types (here `head -c`, which reads a few KiB) over 100 files of
    320 KB: each costs one GET of its first 64 KiB at most, fetched ahead in parallel."""
    files = {f"py/m{i:03d}.py": os.urandom(320_000) for i in range(100)}
    seed(s3, bucket, list(files.items()))
    m = mount(bucket, "--endpoint-url", cloud.endpoint)
    os.listdir(os.path.join(m.path, "py"))
    before = m.stats()
    out = subprocess.run(f"for f in {m.path}/py/*; do head -c 100 \"$f\" | wc -c; done", shell=True,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["100"] * len(files)
    after = m.stats()
    gets = after["requests"]["GetObject"]["total"] - before["requests"].get("GetObject", {}).get("total", 0)
    down = after["bytes_downloaded"] - before["bytes_downloaded"]
    assert gets <= len(files) * 1.05 + 8, gets
    # The first file or two, before the walk shows it only sniffs, come whole.
    assert down <= 2 * 320_000 + len(files) * (64 << 10), down
    assert after["requests"].get("HeadObject") is None
