"""The conformance checks (scripts/conformance.py: pjdfstest-style syscall checks for the calls
docs/SEMANTICS.md claims, as root and as a second user, and an fsx-style random data test with
mmap and reopen) against a real mount."""
import os
import subprocess
import sys
import time

from conftest import ROOT
from test_posix import other_user


def test_syscall_checks_and_10000_random_operations_pass(moto, s3, bucket, mount, tmp_path):
    user = other_user()
    m = mount(bucket, "--allow-other")
    report = tmp_path / "conformance.json"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "conformance.py"), m.path, "--user", user.pw_name,
                          "--fsx-ops", "10000", "--seed", "7", "--json", str(report)], capture_output=True, text=True, timeout=600)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fsx        10000 operations" in out.stdout and "no corruption" in out.stdout
    # What the random test left is in S3 byte for byte.
    time.sleep(0.2)
    with open(os.path.join(m.path, "fsx-7"), "rb") as f:
        assert s3.get_object(Bucket=bucket, Key="fsx-7")["Body"].read() == f.read()


def test_a_file_unlinked_while_being_read_goes_from_s3_at_its_last_close(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="reading", Body=b"content")
    m = mount(bucket)
    p = os.path.join(m.path, "reading")
    fd = os.open(p, os.O_RDONLY)
    os.unlink(p)
    assert not os.path.exists(p) and "reading" not in os.listdir(m.path)
    assert os.pread(fd, 100, 0) == b"content" and os.fstat(fd).st_size == 7
    os.close(fd)
    deadline = time.time() + 5
    while time.time() < deadline and "Contents" in s3.list_objects_v2(Bucket=bucket):
        time.sleep(0.1)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
