#!/usr/bin/env python3
"""POSIX conformance checks for a mounted filesystem, written for s3mount after pjdfstest's and
fsx's ideas (their code is not used, and neither is packaged for Debian): a table of syscall checks
(results and errnos, as root and as a second user), and a random-operation data test that keeps a
local shadow copy and compares after every read (writes at offsets, truncates, mmap reads and
writes, close and reopen).

    python3 scripts/conformance.py DIR [--user NAME] [--fsx-ops 10000] [--seed N] [--json OUT]

DIR must be an empty directory on the filesystem under test. Prints one line per category with its
pass rate, every failure with the expected and the actual outcome, and "N passed, N failed".
Exits 1 when a check fails.
"""
import argparse
import errno
import json
import mmap
import os
import pwd
import random
import stat
import subprocess
import sys
import time


class Checks:
    def __init__(self, root, user):
        self.root, self.user = root, user
        self.results = {}  # category -> [(name, ok, detail)]
        self.n = 0

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def fresh(self, prefix):
        self.n += 1
        return self.path(f"{prefix}{self.n}")

    def record(self, category, name, ok, detail=""):
        self.results.setdefault(category, []).append((name, ok, detail))

    def expect_errno(self, category, name, err, fn, *args):
        try:
            fn(*args)
        except OSError as e:
            self.record(category, name, e.errno == err, f"expected {errno.errorcode[err]}, got {errno.errorcode.get(e.errno, e.errno)}")
            return
        self.record(category, name, False, f"expected {errno.errorcode[err]}, it succeeded")

    def expect(self, category, name, fn):
        try:
            got = fn()
        except OSError as e:
            self.record(category, name, False, f"failed with {errno.errorcode.get(e.errno, e.errno)}")
            return
        except AssertionError as e:
            self.record(category, name, False, str(e) or "wrong result")
            return
        self.record(category, name, got is not False, "" if got is not False else "wrong result")

    def as_user(self, category, name, script, expect_ok):
        """Runs a shell script as the second user: its exit status is the check."""
        if self.user is None:
            return
        out = subprocess.run(["runuser", "-u", self.user.pw_name, "--", "sh", "-c", script], capture_output=True, text=True)
        ok = (out.returncode == 0) == expect_ok
        self.record(category, name, ok, f"exit {out.returncode}: {out.stderr.strip()[:120]}")

    def file(self, prefix="f", data=b"0123456789", mode=0o644):
        p = self.fresh(prefix)
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode)
        os.write(fd, data)
        os.close(fd)
        os.chmod(p, mode)
        return p

    # ---- the syscalls docs/SEMANTICS.md claims ----

    def open_(self):
        c = "open"
        p = self.file()
        self.expect_errno(c, "O_CREAT|O_EXCL on an existing file", errno.EEXIST, os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        self.expect_errno(c, "missing file without O_CREAT", errno.ENOENT, os.open, self.fresh("missing"), os.O_RDONLY)
        self.expect_errno(c, "a directory for writing", errno.EISDIR, os.open, self.root, os.O_WRONLY)
        self.expect_errno(c, "a name of 256 bytes", errno.ENAMETOOLONG, os.open, self.path("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)
        self.expect_errno(c, "a file as a directory", errno.ENOTDIR, os.open, os.path.join(p, "x"), os.O_RDONLY)
        self.expect_errno(c, "O_DIRECTORY on a file", errno.ENOTDIR, os.open, p, os.O_RDONLY | os.O_DIRECTORY)
        q = self.fresh("f")
        self.expect(c, "O_CREAT with mode 0640 (umask 022)", lambda: (os.close(os.open(q, os.O_CREAT | os.O_WRONLY, 0o640)),
                                                                     stat.S_IMODE(os.stat(q).st_mode) == 0o640)[1])
        self.expect(c, "O_TRUNC empties the file", lambda: (os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)), os.path.getsize(p) == 0)[1])
        r = self.file(data=b"abc")
        self.expect(c, "O_APPEND writes at the end", lambda: (lambda fd: (os.write(fd, b"def"), os.close(fd)))(os.open(r, os.O_WRONLY | os.O_APPEND))
                    and open(r, "rb").read() == b"abcdef")
        self.expect(c, "a 255-byte name", lambda: (os.close(os.open(self.path("m" * 255), os.O_CREAT | os.O_WRONLY, 0o644)),
                                                   os.path.exists(self.path("m" * 255)))[1])
        secret = self.file(mode=0o600)
        self.as_user(c, "another user cannot read a 0600 file", f"cat {secret}", False)
        self.as_user(c, "another user cannot write a 0644 file", f"echo x >> {p}", False)
        d = self.fresh("d")
        os.mkdir(d, 0o755)
        os.chmod(d, 0o755)
        self.as_user(c, "another user cannot create in a 0755 directory", f"touch {d}/byuser", False)

    def mkdir_(self):
        c = "mkdir"
        d = self.fresh("d")
        self.expect(c, "mode 0750 kept", lambda: (os.mkdir(d, 0o750), stat.S_IMODE(os.stat(d).st_mode) == 0o750)[1])
        self.expect_errno(c, "an existing directory", errno.EEXIST, os.mkdir, d)
        self.expect_errno(c, "over an existing file", errno.EEXIST, os.mkdir, self.file())
        self.expect_errno(c, "in a missing directory", errno.ENOENT, os.mkdir, os.path.join(self.fresh("missing"), "x"))
        self.expect_errno(c, "a name of 256 bytes", errno.ENAMETOOLONG, os.mkdir, self.path("d" * 256))
        self.expect(c, "is empty and a directory", lambda: os.listdir(d) == [] and stat.S_ISDIR(os.stat(d).st_mode))
        self.as_user(c, "another user cannot mkdir in a 0750 directory", f"mkdir {d}/x", False)

    def rmdir_(self):
        c = "rmdir"
        d = self.fresh("d")
        os.mkdir(d)
        self.file("f")  # unrelated
        os.close(os.open(os.path.join(d, "inside"), os.O_CREAT | os.O_WRONLY, 0o644))
        self.expect_errno(c, "a directory with a file", errno.ENOTEMPTY, os.rmdir, d)
        self.expect_errno(c, "a file", errno.ENOTDIR, os.rmdir, self.file())
        self.expect_errno(c, "a missing name", errno.ENOENT, os.rmdir, self.fresh("missing"))
        os.unlink(os.path.join(d, "inside"))
        self.expect(c, "emptied, then removed", lambda: (os.rmdir(d), not os.path.exists(d))[1])
        e = self.fresh("d")
        os.mkdir(e)
        os.mkdir(os.path.join(e, "sub"))
        self.expect_errno(c, "a directory with a subdirectory", errno.ENOTEMPTY, os.rmdir, e)

    def unlink_(self):
        c = "unlink"
        p = self.file()
        self.expect(c, "a file", lambda: (os.unlink(p), not os.path.exists(p))[1])
        self.expect_errno(c, "a missing name", errno.ENOENT, os.unlink, self.fresh("missing"))
        d = self.fresh("d")
        os.mkdir(d)
        self.expect_errno(c, "a directory", errno.EISDIR, os.unlink, d)
        q = self.file()
        fd = os.open(q, os.O_RDWR)
        os.unlink(q)
        self.expect(c, "an open file stays readable", lambda: os.pread(fd, 10, 0) == b"0123456789")
        os.close(fd)
        self.expect(c, "and is gone after close", lambda: not os.path.exists(q))
        r = self.file(data=b"read me")
        fd = os.open(r, os.O_RDONLY)
        os.unlink(r)
        self.expect(c, "a file open for reading stays readable", lambda: os.pread(fd, 20, 0) == b"read me" and os.fstat(fd).st_size == 7)
        os.close(fd)
        self.expect(c, "and it is gone after close", lambda: not os.path.exists(r))
        sticky = self.fresh("d")
        os.mkdir(sticky, 0o777)
        os.chmod(sticky, 0o777)
        mine = os.path.join(sticky, "rootfile")
        os.close(os.open(mine, os.O_CREAT | os.O_WRONLY, 0o644))
        self.as_user(c, "another user can unlink in a 0777 directory", f"rm -f {mine}", True)

    def rename_(self):
        c = "rename"
        a, b = self.file(data=b"A"), self.file(data=b"B")
        self.expect(c, "a file over a file", lambda: (os.rename(a, b), open(b, "rb").read() == b"A" and not os.path.exists(a))[1])
        d = self.fresh("d")
        os.mkdir(d)
        self.expect_errno(c, "a file over a directory", errno.EISDIR, os.rename, self.file(), d)
        e = self.fresh("d")
        os.mkdir(e)
        os.close(os.open(os.path.join(e, "x"), os.O_CREAT | os.O_WRONLY, 0o644))
        self.expect_errno(c, "a directory over a non-empty one", errno.ENOTEMPTY, os.rename, d, e)
        self.expect_errno(c, "a directory over a file", errno.ENOTDIR, os.rename, d, self.file())
        self.expect_errno(c, "a directory into itself", errno.EINVAL, os.rename, e, os.path.join(e, "sub"))
        self.expect_errno(c, "a missing name", errno.ENOENT, os.rename, self.fresh("missing"), self.fresh("x"))
        f = self.fresh("d")
        self.expect(c, "a directory with its contents", lambda: (os.rename(e, f), os.listdir(f) == ["x"] and not os.path.exists(e))[1])
        m = self.file(mode=0o604)
        n = self.fresh("f")
        self.expect(c, "keeps the mode", lambda: (os.rename(m, n), stat.S_IMODE(os.stat(n).st_mode) == 0o604)[1])

    def truncate_(self):
        c = "truncate"
        p = self.file()
        self.expect(c, "shrink", lambda: (os.truncate(p, 4), open(p, "rb").read() == b"0123")[1])
        self.expect(c, "grow with zeros", lambda: (os.truncate(p, 8), open(p, "rb").read() == b"0123\0\0\0\0")[1])
        self.expect(c, "to zero", lambda: (os.truncate(p, 0), os.path.getsize(p) == 0)[1])
        self.expect_errno(c, "a directory", errno.EISDIR, os.truncate, self.root, 0)
        self.expect_errno(c, "a missing name", errno.ENOENT, os.truncate, self.fresh("missing"), 0)
        self.expect_errno(c, "a negative size", errno.EINVAL, os.truncate, p, -1)
        ro = self.file(mode=0o444)
        self.as_user(c, "another user cannot truncate a 0444 file", f"truncate -s 0 {ro}", False)

    def ftruncate_(self):
        c = "ftruncate"
        p = self.file()
        fd = os.open(p, os.O_RDWR)
        self.expect(c, "shrink through the fd", lambda: (os.ftruncate(fd, 3), os.pread(fd, 10, 0) == b"012")[1])
        self.expect(c, "grow through the fd", lambda: (os.ftruncate(fd, 5), os.fstat(fd).st_size == 5)[1])
        os.close(fd)
        self.expect(c, "the size after close", lambda: open(p, "rb").read() == b"012\0\0")
        fd = os.open(p, os.O_RDONLY)
        self.expect_errno(c, "an fd open read-only", errno.EINVAL, os.ftruncate, fd, 0)
        os.close(fd)

    def chmod_(self):
        c = "chmod"
        p = self.file()
        for mode in (0o600, 0o755, 0o4755, 0o2750, 0o1777 & 0o777, 0o000):
            self.expect(c, f"to {mode:04o}", lambda mode=mode: (os.chmod(p, mode), stat.S_IMODE(os.stat(p).st_mode) == mode)[1])
        d = self.fresh("d")
        os.mkdir(d)
        self.expect(c, "a directory to 0700", lambda: (os.chmod(d, 0o700), stat.S_IMODE(os.stat(d).st_mode) == 0o700)[1])
        self.expect_errno(c, "a missing name", errno.ENOENT, os.chmod, self.fresh("missing"), 0o644)
        self.as_user(c, "another user cannot chmod root's file", f"chmod 777 {p}", False)

    def chown_(self):
        c = "chown"
        p = self.file()
        self.expect(c, "to another uid and gid (root)", lambda: (os.chown(p, 1234, 5678), (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 5678))[1])
        self.expect(c, "-1, -1 changes nothing", lambda: (os.chown(p, -1, -1), (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 5678))[1])
        self.expect(c, "the gid only", lambda: (os.chown(p, -1, 42), (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 42))[1])
        os.chmod(p, 0o4755)
        os.chown(p, 0, 0)
        self.expect(c, "clears setuid", lambda: stat.S_IMODE(os.stat(p).st_mode) & 0o4000 == 0)
        self.expect_errno(c, "a missing name", errno.ENOENT, os.chown, self.fresh("missing"), 0, 0)
        self.as_user(c, "another user cannot take root's file", f"chown {self.user.pw_uid if self.user else 0} {p}", False)

    def utimensat_(self):
        c = "utimensat"
        p = self.file()
        self.expect(c, "nanoseconds kept", lambda: (os.utime(p, ns=(1, 1_234_567_890_987_654_321)), os.stat(p).st_mtime_ns == 1_234_567_890_987_654_321)[1])
        self.expect(c, "a time before 1970", lambda: (os.utime(p, (0, -100)), os.stat(p).st_mtime == -100)[1])
        before = time.time() - 5
        self.expect(c, "now (UTIME_NOW)", lambda: (os.utime(p), os.stat(p).st_mtime >= before)[1])
        os.utime(p, ns=(0, 5_000_000_000))
        self.expect(c, "atime only leaves the mtime (UTIME_OMIT)", lambda: (subprocess.run(["touch", "-a", p], check=True),
                                                                          os.stat(p).st_mtime_ns == 5_000_000_000)[1])
        d = self.fresh("d")
        os.mkdir(d)
        self.expect(c, "a directory", lambda: (os.utime(d, ns=(0, 7_000_000_001)), os.stat(d).st_mtime_ns == 7_000_000_001)[1])
        self.expect_errno(c, "a missing name", errno.ENOENT, os.utime, self.fresh("missing"), (1, 1))
        self.as_user(c, "another user cannot set root's file's times", f"touch -d 2000-01-01 {p}", False)

    def symlink_(self):
        c = "symlink"
        t = self.file()
        link = self.fresh("l")
        self.expect(c, "readlink gives the target", lambda: (os.symlink(os.path.basename(t), link), os.readlink(link) == os.path.basename(t))[1])
        self.expect(c, "lstat says link, stat follows", lambda: stat.S_ISLNK(os.lstat(link).st_mode) and os.stat(link).st_size == 10)
        self.expect_errno(c, "over an existing name", errno.EEXIST, os.symlink, "x", t)
        dangling = self.fresh("l")
        self.expect(c, "a dangling link", lambda: (os.symlink("no/such/target", dangling), os.path.lexists(dangling) and not os.path.exists(dangling))[1])
        self.expect_errno(c, "a name of 256 bytes", errno.ENAMETOOLONG, os.symlink, "x", self.path("s" * 256))
        self.expect(c, "a 1000-byte target", lambda: (os.symlink("t" * 1000, self.fresh("l")), True)[1])
        self.expect(c, "unlink removes the link, not the target", lambda: (os.unlink(link), os.path.exists(t) and not os.path.lexists(link))[1])
        rl = self.fresh("l")
        os.symlink("target", rl)
        rn = self.fresh("l")
        self.expect(c, "rename keeps it a link", lambda: (os.rename(rl, rn), os.readlink(rn) == "target")[1])

    def run(self):
        for f in (self.open_, self.mkdir_, self.rmdir_, self.unlink_, self.rename_, self.truncate_, self.ftruncate_,
                  self.chmod_, self.chown_, self.utimensat_, self.symlink_):
            try:
                f()
            except Exception as e:  # a check that could not even run counts as failed
                self.record(f.__name__.rstrip("_"), f"setup of {f.__name__.rstrip('_')}", False, repr(e))
        return self.results


def fsx(root, ops, seed, maxlen=256 << 10):
    """Random operations on one file through the filesystem and on a shadow copy in memory; every
    read is compared with the shadow. Returns (operations done, [first mismatch description])."""
    rng = random.Random(seed)
    path = os.path.join(root, f"fsx-{seed}")
    shadow = bytearray()
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    log = []

    def fail(what):
        return len(log), [f"seed {seed}, op {len(log)}: {what}; last ops: {log[-8:]}"]

    for _ in range(ops):
        op = rng.choice(["write", "write", "read", "read", "truncate", "mapread", "mapwrite", "reopen", "fsync"])
        size = len(shadow)
        if op == "write":
            off = rng.randrange(0, maxlen - 1)
            n = rng.randrange(1, min(64 << 10, maxlen - off) + 1)
            data = rng.randbytes(n)
            os.pwrite(fd, data, off)
            if off > size:
                shadow.extend(b"\0" * (off - size))
            shadow[off:off + n] = data
        elif op == "truncate":
            n = rng.randrange(0, maxlen)
            os.ftruncate(fd, n)
            shadow = shadow[:n] if n <= size else shadow + bytearray(n - size)
        elif op == "read" and size:
            off = rng.randrange(0, size)
            n = rng.randrange(1, size - off + 1)
            got = os.pread(fd, n, off)
            if got != bytes(shadow[off:off + n]):
                log.append(("read", off, n))
                return fail(f"read {n} at {off} differs")
        elif op in ("mapread", "mapwrite") and size:
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
                off = rng.randrange(0, size)
                n = rng.randrange(1, min(16 << 10, size - off) + 1)
                if op == "mapread":
                    if mm[off:off + n] != bytes(shadow[off:off + n]):
                        log.append((op, off, n))
                        return fail(f"mmap read {n} at {off} differs")
                else:
                    data = rng.randbytes(n)
                    mm[off:off + n] = data
                    shadow[off:off + n] = data
                    mm.flush()
            log.append((op, off, n))
            continue
        elif op == "reopen":
            os.close(fd)
            fd = os.open(path, os.O_RDWR)
            if os.fstat(fd).st_size != len(shadow):
                return fail(f"size after reopen {os.fstat(fd).st_size} != {len(shadow)}")
        elif op == "fsync":
            os.fsync(fd)
        log.append((op,))
    os.close(fd)
    with open(path, "rb") as f:
        if f.read() != bytes(shadow):
            return fail("contents after the last close differ")
    return len(log), []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--user", help="a second user for the permission checks (runuser)")
    ap.add_argument("--fsx-ops", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    os.umask(0o022)
    user = pwd.getpwnam(args.user) if args.user else None
    results = Checks(args.dir, user).run()
    passed = failed = 0
    summary = {}
    for cat, rows in results.items():
        ok = sum(1 for r in rows if r[1])
        passed += ok
        failed += len(rows) - ok
        summary[cat] = {"passed": ok, "total": len(rows), "failures": [f"{n}: {d}" for n, good, d in rows if not good]}
        print(f"{cat:10} {ok}/{len(rows)}")
        for n, good, d in rows:
            if not good:
                print(f"    FAIL {n}: {d}")
    t0 = time.time()
    done, mismatch = fsx(args.dir, args.fsx_ops, args.seed) if args.fsx_ops else (0, [])
    print(f"fsx        {done} operations (seed {args.seed}, {time.time() - t0:.1f} s): {'no corruption' if not mismatch else mismatch[0]}")
    summary["fsx"] = {"operations": done, "seed": args.seed, "corruption": mismatch}
    if mismatch:
        failed += 1
    else:
        passed += 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
