#!/usr/bin/env python3
"""What graphical and terminal file managers cost when they open a bucket folder: a folder of
1,000 files of eight common types (.py of ~320 KB, images and others of ~20 KB) and 20 subfolders
is seeded in a local S3 emulator, mounted (s3mount, s3fs or rclone) through the cloud-like proxy
(20 ms a request), and opened in Thunar and PCManFM under Xvfb, and in mc and ranger under tmux,
each for a while on a fresh mount. The emulator's access log says what reached S3: requests by
operation, 404s, GetObject bytes. A screenshot of each graphical window goes to docs/benchmarks/.

    python3 scripts/filemanagers.py [--tools s3mount,s3fs,rclone] [--apps thunar,pcmanfm,mc,ranger]
                                    [--seconds 20] [--latency-ms 20] [--json out.json]
Needs root, Xvfb, thunar, pcmanfm, mc, ranger, tmux, imagemagick (scripts/setup.sh tests).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s3log  # noqa: E402
from bench import KEY, SECRET, Tool  # noqa: E402  (mounts each tool as the main benchmark does)
from cloudproxy import ProxyProcess  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("S3MOUNT_BIN", os.path.join(ROOT, ".build", "release", "s3mount"))
BUCKET = "fmbench"
TYPES = ["py", "jpg", "png", "txt", "md", "json", "csv", "html"]
GUI_APPS = ("thunar", "pcmanfm", "nemo", "caja")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_folder(workdir, count=1000, subfolders=20):
    """The seeded folder's files as {name: bytes}: real images (thumbnails need them) and text."""
    rng = random.Random(1)
    img = {}
    for ext in ("jpg", "png"):
        path = os.path.join(workdir, "sample." + ext)
        subprocess.run(["convert", "-size", "160x120", "plasma:fractal", "-quality", "80", path], check=True)
        img[ext] = open(path, "rb").read()
    files = {}
    for i in range(count):
        ext = TYPES[i % len(TYPES)]
        name = f"file{i:04d}.{ext}"
        if ext == "py":
            line = f"def f{i}(x):\n    return x * {i}  # " + "pad " * 10 + "\n"
            body = (line * (320_000 // len(line) + 1))[:320_000].encode()
        elif ext in img:
            body = img[ext]
        else:
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "s3", "mount"]) for _ in range(4000))
            body = {"json": json.dumps({"i": i, "text": words}), "csv": words.replace(" ", ","),
                    "html": f"<html><body><p>{words}</p></body></html>", "md": f"# {i}\n\n{words}",
                    "txt": words}[ext].encode()[:20_000]
        files[name] = body
    for d in range(subfolders):
        files[f"dir{d:02d}/readme.txt"] = b"inside\n"
    return files


class Emulator:
    def __init__(self, workdir):
        self.port = free_port()
        self.log = os.path.join(workdir, "moto.log")
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            if subprocess.run(["curl", "-s", self.endpoint], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)

    def mark(self):
        self.logf.flush()
        return os.path.getsize(self.log)

    def since(self, pos):
        time.sleep(0.3)
        with open(self.log, "rb") as f:
            f.seek(pos)
            return s3log.requests(f.read().decode("utf-8", "replace"), BUCKET)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def proxy_bytes(proxy):
    """Bytes the proxy sent to the mount so far (its answers' bodies and headers)."""
    return proxy.bytes_sent() if proxy else 0


def run_gui(app, folder, seconds, shot, at_3s, until=None):
    """The app in its own Xvfb and D-Bus session, for `seconds`; screenshots at 3 s and at the end
    (`at_3s` is called then too). With `until` (a function of the X display), for as long as it
    takes instead: until it returns true, checked every 0.2 s, `seconds` at most; returns whether
    it did (a program slow to come up, as under a full desktop's D-Bus services, gets the time)."""
    # Xvfb picks a free display itself and says which (-displayfd).
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    display = ":" + xvfb.stdout.readline().strip()
    home = tempfile.mkdtemp(prefix="fm-home-")
    # GVFS_DISABLE_FUSE: the session's gvfsd would mount gvfsd-fuse on HOME/.cache/gvfs, a mount
    # that outlives the app and keeps HOME from being removed. TMPDIR: what the apps leave there.
    env = dict(os.environ, DISPLAY=display, HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"),
               XDG_CONFIG_HOME=os.path.join(home, ".config"), NO_AT_BRIDGE="1", GVFS_DISABLE_FUSE="1",
               TMPDIR=home)
    cmd = {"thunar": ["thunar", folder], "pcmanfm": ["pcmanfm", "--no-desktop", folder],
           "nemo": ["nemo", "--no-desktop", folder], "caja": ["caja", "--no-desktop", "--browser", folder]}[app]
    p = subprocess.Popen(["dbus-run-session", "--"] + cmd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    met = None
    if until is not None:
        met = False
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and p.poll() is None:
            if until(display):
                met = True
                break
            time.sleep(0.2)
    else:
        time.sleep(3)
        if shot:
            subprocess.run(["import", "-window", "root", shot.replace(".png", "-3s.png")], env=env, capture_output=True)
        at_3s()
        time.sleep(max(0, seconds - 3))
        if shot:
            subprocess.run(["import", "-window", "root", shot], env=env, capture_output=True)
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
    # SIGTERM: Xvfb removes its /tmp/.X*-lock and socket on the way out (SIGKILL leaves them).
    xvfb.terminate()
    try:
        xvfb.wait(5)
    except subprocess.TimeoutExpired:
        xvfb.kill()
        xvfb.wait()
    remove_tree(home)
    return met


def window_shown(display, title):
    """A window named `title` (or "`title` - …") is on the X display: the file manager is up."""
    out = subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True, text=True)
    return any(f'"{title}"' in line or f'"{title} - ' in line for line in out.stdout.splitlines())


def remove_tree(path):
    """Removes `path`; the session's helpers may still be writing in it for a moment."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)
    print(f"filemanagers: could not remove {path}", file=sys.stderr)


def run_tui(app, folder, seconds, at_3s):
    """mc (two panels) or ranger moving through 10 entries, under tmux."""
    name = f"fm{os.getpid()}"
    cmd = {"mc": f"mc --nosubshell {folder} {folder}", "ranger": f"ranger {folder}"}[app]
    # A tmux server of its own (socket) and a TMPDIR (mc's mc-USER) in a folder removed afterwards.
    work = tempfile.mkdtemp(prefix="fm-tui-")
    tmux = ["tmux", "-S", os.path.join(work, "tmux.sock")]
    subprocess.run(tmux + ["new-session", "-d", "-s", name, "-x", "200", "-y", "50", cmd], check=True,
                   env=dict(os.environ, TERM="xterm-256color", TMPDIR=work))
    time.sleep(3)
    at_3s()
    if app == "ranger":
        for _ in range(10):
            subprocess.run(tmux + ["send-keys", "-t", name, "j"])
            time.sleep(0.3)
    time.sleep(max(0, seconds - 6))
    subprocess.run(tmux + ["kill-server"], capture_output=True)
    remove_tree(work)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="s3mount,s3fs,rclone")
    ap.add_argument("--apps", default="thunar,pcmanfm,mc,ranger")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--shots", default=os.path.join(ROOT, "docs", "benchmarks"), help="where screenshots go")
    ap.add_argument("--label", default="", help="added to screenshot names (e.g. -before)")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="s3m-fm-")
    emu = Emulator(workdir)
    proxy = ProxyProcess(emu.port, latency_ms=args.latency_ms, conn_mbps=25) if args.latency_ms else None
    endpoint = proxy.endpoint if proxy else emu.endpoint
    results = []
    try:
        import boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url=emu.endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
        s3.create_bucket(Bucket=BUCKET)
        files = make_folder(workdir)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda kv: s3.put_object(Bucket=BUCKET, Key="folder/" + kv[0], Body=kv[1]), files.items()))
        mnt = os.path.join(workdir, "mnt")
        os.makedirs(mnt)
        for tool in args.tools.split(","):
            for app in args.apps.split(","):
                mounter = Tool(tool, endpoint, workdir)
                mounter.mount(BUCKET, mnt)
                pos = emu.mark()
                sent0 = proxy_bytes(proxy)
                t0 = time.time()
                early = {}

                def at_3s():
                    early["gets"] = sum(1 for op, _, _ in emu.since(pos) if op == "GetObject")
                shot = os.path.join(args.shots, f"fm-{app}-{tool}{args.label}.png")
                if app in GUI_APPS:
                    run_gui(app, os.path.join(mnt, "folder"), args.seconds, shot, at_3s)
                else:
                    run_tui(app, os.path.join(mnt, "folder"), args.seconds, at_3s)
                seen = emu.since(pos)
                sent = proxy_bytes(proxy) - sent0
                stats = None
                if tool == "s3mount":
                    out = subprocess.run([BIN, "stats", mnt], capture_output=True, text=True)
                    stats = json.loads(out.stdout) if out.returncode == 0 else None
                mounter.unmount(mnt)
                counts = {}
                for op, status, _ in seen:
                    counts[op] = counts.get(op, 0) + 1
                not_found = sum(1 for _, status, _ in seen if status == 404)
                got = [t for op, status, t in seen if op == "GetObject"]
                r = {"tool": tool, "app": app, "seconds": round(time.time() - t0, 1), "requests": counts,
                     "not_found": not_found, "get_objects": len(got), "gets_by_3s": early.get("gets"),
                     "distinct_files_read": len(set(got)), "mb_through_proxy": round(sent / 1e6, 2)}
                if stats:
                    r["mount_bytes_down"] = stats["bytes_downloaded"]
                    r["reads"] = {k: v for k, v in stats.get("reads", {}).items() if k.startswith("walk")}
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        Tool("s3mount", endpoint, workdir).unmount(os.path.join(workdir, "mnt"))
        if proxy:
            proxy.stop()
        emu.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
