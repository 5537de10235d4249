"""Browsing through a real mount: request counts for the workloads that hurt with other tools."""
import errno
import os
import stat as st
import time

from conftest import BIN, delta, run, seed

PROBES = [".hidden", "desktop.ini", ".directory", "folder.jpg"]


def test_ls_la_of_2500_objects_sends_only_listings(moto, s3, bucket, mount):
    seed(s3, bucket, [f"big/obj-{i:05d}.dat" for i in range(2500)], body=b"0123456789")
    m = mount(bucket)
    before = m.requests()
    pos = moto.log_position()
    t0 = time.time()
    out = run(["ls", "-la", os.path.join(m.path, "big")])
    elapsed = time.time() - t0
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if l.endswith(".dat")]
    assert len(lines) == 2500
    assert all(" 10 " in l for l in lines), "sizes come from the listing"
    d = delta(before, m.requests())
    assert d.get("ListObjectsV2", 0) <= 4, d
    assert d.get("HeadObject", 0) == 0, d
    seen = moto.requests_since(pos, bucket)
    assert [r for r in seen if r[0] == "HeadObject"] == []
    assert [r for r in seen if r[1] == 404] == []
    assert len([r for r in seen if r[0] == "ListObjectsV2"]) == d.get("ListObjectsV2", 0)
    print(f"ls -la 2500: {d} in {elapsed:.2f}s")
    # The log check can fail: a HeadObject 404 sent by another client shows up in it.
    pos404 = moto.log_position()
    try:
        s3.head_object(Bucket=bucket, Key="big/definitely-missing")
    except Exception:
        pass
    assert ("HeadObject", 404) in [(r[0], r[1]) for r in moto.requests_since(pos404, bucket)]

    # stat of a listed file and of a missing name: no request at all.
    before = m.requests()
    pos = moto.log_position()
    s = os.stat(os.path.join(m.path, "big", "obj-01234.dat"))
    assert s.st_size == 10 and st.S_ISREG(s.st_mode)
    assert run(["stat", os.path.join(m.path, "big", "no-such-file.txt")]).returncode != 0
    assert delta(before, m.requests()) == {}
    assert moto.requests_since(pos, bucket) == []

    # cat of a listed file: exactly one GetObject, no HeadObject.
    before = m.requests()
    out = run(["cat", os.path.join(m.path, "big", "obj-00007.dat")])
    assert out.stdout == "0123456789"
    assert delta(before, m.requests()) == {"GetObject": 1}


def test_find_and_stat_over_nested_tree_sends_no_head_and_no_404(moto, s3, bucket, mount):
    keys = []
    for a in range(6):
        for b in range(6):
            for c in range(5):
                keys.append(f"tree/d{a}/e{b}/f{c}.txt")
            keys.append(f"tree/d{a}/top{b}.txt")
    seed(s3, bucket, keys)
    m = mount(bucket)
    before = m.requests()
    pos = moto.log_position()
    out = run(f"find {m.path}/tree -type f | xargs stat --format '%n %s'")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(keys)
    d = delta(before, m.requests())
    seen = moto.requests_since(pos, bucket)
    assert d.get("HeadObject", 0) == 0 and not [r for r in seen if r[0] == "HeadObject"]
    assert not [r for r in seen if r[1] == 404]
    # The whole tree (43 directories) comes in one flat page: one listing, plus the lookup of "tree".
    assert d.get("ListObjectsV2", 0) <= 3, d
    print(f"find+stat over {len(keys)} objects: {d}")


def test_find_over_a_tree_larger_than_a_page_lists_each_key_about_once(moto, s3, bucket, mount):
    """6,000 objects, 1,500 under each of 4 top directories: more than a 1,000-key page per
    subtree, so the walk continues flat pages across directories (carried from page to page)."""
    keys = [f"big/t{a}/s{b:02d}/f{c:02d}.txt" for a in range(4) for b in range(15) for c in range(100)]
    seed(s3, bucket, keys)
    m = mount(bucket)
    before = m.requests()
    out = run(f"cd {m.path} && find big -type f | sort")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == sorted(keys)
    d = delta(before, m.requests())
    assert d.get("HeadObject", 0) == 0, d
    # 6 flat pages hold every key once; the rest is one level-by-level start (the bucket root,
    # big, t0) before the walk is recognised. Listing each directory on its own took 18.
    print(f"find over {len(keys)} objects in 64 directories: {d}")
    assert d.get("ListObjectsV2", 0) <= 12, d


def test_file_manager_probes_after_listing_cost_nothing(moto, s3, bucket, mount):
    seed(s3, bucket, [f"photos/album{a}/img{i}.jpg" for a in range(5) for i in range(10)])
    m = mount(bucket)
    dirs = [os.path.join(m.path, "photos")] + [os.path.join(m.path, "photos", f"album{a}") for a in range(5)]
    for d in dirs:
        assert len(os.listdir(d)) > 0
    before = m.requests()
    pos = moto.log_position()
    for d in dirs:
        for p in PROBES:
            assert not os.path.exists(os.path.join(d, p))
    assert delta(before, m.requests()) == {}
    assert moto.requests_since(pos, bucket) == []
    stats = m.stats()
    assert stats["cache"]["negative"]["hits"] >= len(PROBES)  # some answered by the kernel's negative cache


def test_lookup_in_unlisted_directory_costs_one_listing(moto, s3, bucket, mount):
    seed(s3, bucket, ["docs/readme.md", "docs/sub/deep.txt", "docs/readme.md.bak"])
    m = mount(bucket)
    before = m.requests()
    pos = moto.log_position()
    assert os.path.isfile(os.path.join(m.path, "docs", "readme.md"))
    assert os.path.isdir(os.path.join(m.path, "docs", "sub"))
    assert not os.path.exists(os.path.join(m.path, "docs", "missing"))
    d = delta(before, m.requests())
    assert set(d) == {"ListObjectsV2"} and d["ListObjectsV2"] <= 4, d
    seen = moto.requests_since(pos, bucket)
    assert all(r[0] == "ListObjectsV2" and r[1] == 200 for r in seen), seen


def test_directories_markers_collisions_and_odd_keys(moto, s3, bucket, mount):
    long_name = "L" * 300
    nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"
    seed(s3, bucket, [
        ("implicit/child.txt", b"child"),
        ("marker/", b""),
        ("withmarker/", b""), ("withmarker/in.txt", b"in"),
        ("both", b"i am a file"), ("both/inner.txt", b"inner"),
        ("odd/a//b", b"double"), ("odd/./dot", b"dot"), ("odd/../up", b"up"), (f"odd/{long_name}", b"long"),
        ("odd/ok.txt", b"ok"),
        ("uni/" + nfc, b"nfc"), ("uni/" + nfd, b"nfd"),
        ("chars/a b+c@d%e=f.txt", b"chars"),
    ])
    m = mount(bucket)
    root = sorted(os.listdir(m.path))
    assert root == ["both", "chars", "implicit", "marker", "odd", "uni", "withmarker"]
    assert os.path.isdir(os.path.join(m.path, "both")), "a key that is both file and prefix shows the directory"
    assert os.listdir(os.path.join(m.path, "both")) == ["inner.txt"]
    assert os.listdir(os.path.join(m.path, "marker")) == [], "a marker-only directory is empty"
    assert os.listdir(os.path.join(m.path, "withmarker")) == ["in.txt"]
    assert open(os.path.join(m.path, "implicit", "child.txt")).read() == "child"
    # Odd keys are skipped, the rest of the directory stays visible.
    odd = sorted(os.listdir(os.path.join(m.path, "odd")))
    assert "ok.txt" in odd and long_name not in odd and "." not in odd
    assert open(os.path.join(m.path, "odd", "ok.txt")).read() == "ok"
    # NFC and NFD names are different names (compared as bytes).
    uni = sorted(os.listdir(os.path.join(m.path, "uni").encode()))
    assert uni == sorted([nfc.encode(), nfd.encode()])
    assert open(os.path.join(m.path, "uni", nfc).encode(), "rb").read() == b"nfc"
    assert open(os.path.join(m.path, "uni", nfd).encode(), "rb").read() == b"nfd"
    assert open(os.path.join(m.path, "chars", "a b+c@d%e=f.txt")).read() == "chars"
    assert "skipping key" in m.log()


def test_empty_bucket_and_prefix_mount(moto, s3, bucket, mount):
    seed(s3, bucket, ["team/a/1.txt", "team/b.txt", "other/x.txt"])
    m = mount(bucket, source=f"{bucket}:team")
    assert sorted(os.listdir(m.path)) == ["a", "b.txt"]
    assert open(os.path.join(m.path, "a", "1.txt")).read() == "x"
    m2 = mount(bucket, "--prefix", "team/a/")
    assert os.listdir(m2.path) == ["1.txt"]
    m3 = mount(bucket, source=f"s3://{bucket}/other/")
    assert os.listdir(m3.path) == ["x.txt"]
    empty = "t-empty-" + bucket[2:]
    s3.create_bucket(Bucket=empty)
    m4 = mount(empty)
    assert os.listdir(m4.path) == []


def test_owner_and_mode_options(moto, s3, bucket, mount):
    seed(s3, bucket, ["d/f.txt"])
    m = mount(bucket, "--uid", "1234", "--gid", "4321", "--file-mode", "0600", "--dir-mode", "0750")
    f = os.stat(os.path.join(m.path, "d", "f.txt"))
    d = os.stat(os.path.join(m.path, "d"))
    assert (f.st_uid, f.st_gid, st.S_IMODE(f.st_mode)) == (1234, 4321, 0o600)
    assert (d.st_uid, d.st_gid, st.S_IMODE(d.st_mode)) == (1234, 4321, 0o750)
    assert st.S_ISDIR(d.st_mode) and d.st_nlink >= 2 and f.st_nlink == 1
    m2 = mount(bucket, "-o", "uid=42,gid=43,file_mode=0640,_netdev,nofail,x-systemd.automount")
    f2 = os.stat(os.path.join(m2.path, "d", "f.txt"))
    assert (f2.st_uid, f2.st_gid, st.S_IMODE(f2.st_mode)) == (42, 43, 0o640)


def test_read_only_refuses_changes(moto, s3, bucket, mount):
    seed(s3, bucket, ["keep.txt"])
    m = mount(bucket, "--read-only")
    for cmd in [f"touch {m.path}/new.txt", f"mkdir {m.path}/newdir", f"rm {m.path}/keep.txt",
                f"echo hi > {m.path}/keep.txt", f"mv {m.path}/keep.txt {m.path}/moved.txt"]:
        out = run(cmd)
        assert out.returncode != 0 and "Read-only file system" in out.stderr, (cmd, out.stderr)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep.txt"]
    assert s3.get_object(Bucket=bucket, Key="keep.txt")["Body"].read() == b"x"


def test_statfs_xattr_and_access_need_no_request(moto, s3, bucket, mount):
    seed(s3, bucket, ["f.txt"])
    m = mount(bucket)
    os.listdir(m.path)
    before = m.requests()
    vfs = os.statvfs(m.path)
    assert vfs.f_bavail > 0 and vfs.f_namemax == 255
    assert run(["df", m.path]).returncode == 0
    p = os.path.join(m.path, "f.txt")
    # No extended attributes: "not supported", answered by the kernel itself after the first ask
    # (ls -l reads two per file, cp -a lists them).
    for call in (lambda: os.listxattr(p), lambda: os.getxattr(p, "user.mime_type"), lambda: os.setxattr(p, "user.x", b"1")):
        try:
            call()
            assert False, "expected EOPNOTSUPP"
        except OSError as e:
            assert e.errno == errno.EOPNOTSUPP, e
    out = run(["ls", "-l", m.path])
    assert out.returncode == 0 and "f.txt" in out.stdout, out.stderr
    out = run(["cp", "-a", p, os.path.join(m.path, "copy.txt")])
    assert out.returncode == 0, out.stderr
    assert os.access(p, os.R_OK)
    assert delta(before, m.requests()) == {"GetObject": 1, "PutObject": 1}, "the copy's read and upload, nothing else"
    assert s3.get_object(Bucket=bucket, Key="copy.txt")["Body"].read() == s3.get_object(Bucket=bucket, Key="f.txt")["Body"].read()


def test_stats_cost_no_request(moto, s3, bucket, mount):
    seed(s3, bucket, ["a/f.txt", "g.txt"])
    m = mount(bucket)
    pos = moto.log_position()
    first = m.stats()
    time.sleep(0.3)
    second = m.stats()
    assert moto.requests_since(pos, bucket) == [], "reading the statistics opens the root but lists nothing"
    assert first["requests_total"] == second["requests_total"]
    assert sorted(os.listdir(m.path)) == ["a", "g.txt"]
    pos = moto.log_position()
    inside = run([BIN, "stats", os.path.join(m.path, "a")])
    assert inside.returncode == 0 and '"requests_total"' in inside.stdout, "any directory of the mount answers"
    assert moto.requests_since(pos, bucket) == []
