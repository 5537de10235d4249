"""Real file managers on a bucket folder: Thunar and PCManFM under Xvfb (they sniff types and make
thumbnails), mc and ranger under tmux. What reaches S3 is checked: no HEAD, no 404, and each
sniffed file costs one small read (a head of 64 KiB at most), fetched ahead in parallel."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, seed

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import filemanagers  # noqa: E402

GUI = all(shutil.which(p) for p in ("Xvfb", "thunar", "pcmanfm", "dbus-run-session", "convert"))
TUI = all(shutil.which(p) for p in ("mc", "ranger", "tmux"))
if os.environ.get("CI") and not (GUI and TUI):
    pytest.fail("CI needs Xvfb, thunar, pcmanfm, mc, ranger, tmux, imagemagick (scripts/setup.sh installs them)",
                pytrace=False)


@pytest.fixture(scope="module")
def folder():
    """200 files of eight types (.py of 320 KB, images and text of a few KB) and 5 subfolders."""
    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fm-seed-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    try:
        files = filemanagers.make_folder(work, count=200, subfolders=5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


# How long a desktop file manager may take to show its window and read: generous, for a machine
# whose D-Bus session starts a full desktop's services with every GTK program (GNOME Files' gvfs
# volume monitors). A run on a bare machine ends in a few seconds, once the reads settle.
GUI_BOUND = 120
# The reads have settled: no new byte for this long after the first.
QUIET = 3


def opened_in(app, m, seconds):
    if app in ("thunar", "pcmanfm"):
        return opened_in_gui(app, m)
    filemanagers.run_tui(app, os.path.join(m.path, "folder"), seconds, lambda: None)
    return None


def opened_in_gui(app, m):
    """Runs the app until its window is up, it read a first file, and its reads settled (no new
    byte for QUIET s), GUI_BOUND s at most; returns what it reached by then."""
    start = m.stats()["bytes_downloaded"]
    seen = {"window": None, "first read": None, "settled": None}
    last = {"bytes": start, "at": time.monotonic()}

    def done(display):
        now = time.monotonic()
        if seen["window"] is None:
            if not filemanagers.window_shown(display, "folder"):
                return False
            seen["window"] = now
        down = m.stats()["bytes_downloaded"]
        if down != last["bytes"]:
            last.update(bytes=down, at=now)
            if seen["first read"] is None:
                seen["first read"] = now
        if seen["first read"] is not None and now - last["at"] >= QUIET:
            seen["settled"] = now
            return True
        return False

    began = time.monotonic()
    filemanagers.run_gui(app, os.path.join(m.path, "folder"), GUI_BOUND, None, lambda: None, until=done)
    return {k: None if v is None else round(v - began, 1) for k, v in seen.items()}


@pytest.mark.parametrize("app", ["thunar", "pcmanfm", "mc", "ranger"])
def test_a_file_manager_opens_a_folder_with_small_reads_only(moto, s3, bucket, mount, folder, app):
    if not (GUI if app in ("thunar", "pcmanfm") else TUI):
        pytest.skip(f"{app} is not installed (scripts/setup.sh installs it)")
    seed(s3, bucket, [("folder/" + k, v) for k, v in folder.items()])
    m = mount(bucket)
    pos = moto.log_position()
    before = m.stats()
    reached = opened_in(app, m, 10)
    print(f"{app}: seconds from its start: {reached}")  # (shown with -s, or with a failure)
    after = m.stats()
    seen = moto.requests_since(pos, bucket)
    assert [r for r in seen if r[0] == "HeadObject"] == []
    assert [r for r in seen if r[1] == 404] == []
    gets = [r[2].split("?")[0].rsplit("/", 1)[-1] for r in seen if r[0] == "GetObject"]
    down = after["bytes_downloaded"] - before["bytes_downloaded"]
    if app in ("mc", "ranger"):
        assert gets == [], gets  # listing requests only
        return
    assert gets, f"{app} read nothing in {GUI_BOUND} s (seconds from its start: {reached})"
    assert reached["settled"], f"{app}'s reads did not settle in {GUI_BOUND} s (seconds from its start: {reached})"
    # Whole files only where a whole file is what the program reads (thumbnails of small images,
    # which Thunar's thumbnailer and its own type sniffing may each read: seen once on a loaded
    # RGW, 7.3 MB for 3.6 MB of them); every other file a head of at most 64 KiB (the 25 .py files
    # read whole would pass this bound by 2 MB), and nothing read twice beyond a few.
    whole = sum(len(folder[g]) for g in set(gets) if not g.endswith(".py"))
    assert down <= 2 * whole + len({g for g in gets if g.endswith(".py")}) * (64 << 10) + 2 * 320_000, down
    assert len(gets) <= len(set(gets)) * 1.1 + 5, len(gets)
