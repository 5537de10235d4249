"""The documentation names files that exist: every repository path in README.md and docs/*.md
(`scripts/demo.sh`, `Sources/S3FSCore/Metadata/PosixMeta.swift`, `docs/SEMANTICS.md`, …), and every
source file named by its name alone (`Command.swift`, `chaosproxy.py`). No store is used."""
import glob
import os
import re

import pytest

from conftest import ROOT

DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# The repository's own folders and top-level files. A path is one of them followed by more of a path
# (`scripts/x.sh`, `Tests/integration/`), not preceded by anything that makes it another path: `/`
# (/usr/share/doc/s3mount, /etc/s3mount), `~`, `./`, a letter or `:` (a URL, `s3://bucket/docs/x`).
TOP = r"(?:\.ci|scripts|Sources|Tests|docs|systemd|packaging)/[A-Za-z0-9_.@*/-]*|README\.md|Package\.swift"
PATH = re.compile(r"(?<![A-Za-z0-9_./~:$@-])(" + TOP + r")")
# A file named by its name alone, in backquotes: `Daemon.swift`, `test_stores.py`, `bench.sh`.
BARE = re.compile(r"`([A-Za-z0-9_-]+\.(?:swift|py|sh))`")


def named_paths(text):
    """The repository paths a text names, as written (trailing punctuation and a pytest node's
    `::test` left off)."""
    for m in PATH.finditer(text):
        p = m.group(1).split("::")[0].rstrip(".,:;")
        yield p


def exists(path):
    return bool(glob.glob(os.path.join(ROOT, path))) if "*" in path else os.path.exists(os.path.join(ROOT, path))


def test_the_recogniser_takes_repository_paths_and_leaves_others():
    text = ("see scripts/demo.sh, `docs/SEMANTICS.md`; (Sources/S3/Log.swift) and Tests/integration/test_cli.py::test_x. "
            "Not /etc/s3mount/example.env, /usr/share/doc/s3mount, https://example.com/docs/x.md, s3://b/docs/y, "
            "~/docs/z, ./scripts/w or mydocs/v.")
    assert list(named_paths(text)) == ["scripts/demo.sh", "docs/SEMANTICS.md", "Sources/S3/Log.swift",
                                       "Tests/integration/test_cli.py"]


@pytest.mark.moto_only("reads the repository only: once is enough")
@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_document_names_exists(doc):
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    paths = sorted(set(named_paths(text)))
    assert paths or doc != "README.md", "README.md names no path: is the recogniser broken?"
    missing = [p for p in paths if not exists(p)]
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.moto_only("reads the repository only: once is enough")
@pytest.mark.parametrize("doc", DOCS)
def test_every_source_file_a_document_names_by_name_alone_exists(doc):
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    names = set(BARE.findall(text))
    files = set()
    for top in ("Sources", "Tests", "scripts", ".ci", "packaging", "systemd"):
        for _, _, fs in os.walk(os.path.join(ROOT, top)):
            files.update(fs)
    missing = sorted(n for n in names if n not in files)
    assert not missing, f"{doc} names files that are nowhere in the repository: {missing}"


@pytest.mark.moto_only("reads the repository only: once is enough")
def test_the_units_documentation_is_the_man_page_that_ships():
    """The unit's Documentation= points at what is installed with it (the package adds its guides
    under /usr/share/doc/s3mount, scripts/package.sh checks those), not at a web page that may not exist."""
    unit = open(os.path.join(ROOT, "systemd", "s3mount@.service")).read()
    docs = [u for line in unit.splitlines() if line.startswith("Documentation=") for u in line.split("=", 1)[1].split()]
    assert docs, "the unit has no Documentation="
    for u in docs:
        m = re.fullmatch(r"man:([a-z0-9.-]+)\(([1-8])\)", u)
        assert m, f"Documentation={u}: a man page that ships with s3mount, not a link"
        assert exists(f"docs/{m.group(1)}.{m.group(2)}"), f"Documentation={u}: no docs/{m.group(1)}.{m.group(2)}"
