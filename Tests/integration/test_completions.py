"""The man page and the shell completions (docs/s3mount.1, scripts/completions/) are what the binary
generates from its declarations (scripts/gen-cli-files.py), know every option that `s3mount --help`
lists, and the completions answer in their shells; scripts/install.sh installs them."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT, run

COMPLETIONS = os.path.join(ROOT, "scripts", "completions")
MAN = os.path.join(ROOT, "docs", "s3mount.1")


def help_options():
    out = run([BIN, "--help"])
    assert out.returncode == 0, out.stderr
    opts = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out.stdout))
    assert len(opts) > 30 and "--endpoint-url" in opts and "--version" in opts
    return sorted(opts)


def read(path):
    with open(path) as f:
        return f.read()


def test_man_page_and_zsh_completion_know_every_option():
    # bash and fish are asked in their shells below.
    man = re.sub(r"\\f[BIRP]", " ", read(MAN)).replace("\\-", "-")  # font changes and escaped dashes
    zsh = read(os.path.join(COMPLETIONS, "_s3mount"))
    missing = {}
    for opt in help_options():
        for name, pattern in (("docs/s3mount.1", r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])"),
                              ("_s3mount", r"['{,)]" + re.escape(opt) + r"[=\[},]")):
            if not re.search(pattern, man if name == "docs/s3mount.1" else zsh):
                missing.setdefault(name, []).append(opt)
    assert not missing, f"options of --help missing from: {missing}"


def test_man_page_renders_without_warnings():
    if shutil.which("man") is None:
        pytest.fail("man missing (apt-get install man-db)")
    out = subprocess.run(["man", "--warnings", "-l", MAN], capture_output=True, text=True,
                         env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = re.sub(".\x08", "", out.stdout).replace("\u2010", "-")  # bold and underline by overstrike
    assert "--endpoint-url URL" in text and "EXIT STATUS" in text


def test_committed_files_are_what_the_binary_generates():
    out = run(["python3", os.path.join(ROOT, "scripts", "gen-cli-files.py"), "--check", BIN])
    assert out.returncode == 0, out.stderr


# The generated scripts ask the binary itself for some values (-o's list, --profile, the bucket
# position's `stats`): as installed, `s3mount` is on PATH.
def completion_env():
    return dict(os.environ, PATH=os.path.dirname(os.path.abspath(BIN)) + os.pathsep + os.environ["PATH"])


# As bash calls a completion function: the command, the word being completed, the word before it.
BASH_DRIVER = r"""
source /usr/share/bash-completion/bash_completion
source "$1"
shift
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$1"
[[ "$1" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_s3mount s3mount "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"""

# `complete -C` in `fish -c` has no cursor, and `commandline -C` fails there; interactively it
# answers the cursor's place, here at the end of the line.
FISH_CURSOR = r"""
function commandline
    if string match -qr -- '^-[a-zA-Z]*C[a-zA-Z]*$' $argv
        string length -- "$(builtin commandline -ct)"
        return
    end
    builtin commandline $argv
end
"""


def bash_complete(line, cwd):
    if not os.path.exists("/usr/share/bash-completion/bash_completion"):
        pytest.fail("bash-completion missing: scripts/setup.sh installs it")
    out = subprocess.run(["bash", "-c", BASH_DRIVER, "bash", os.path.join(COMPLETIONS, "s3mount.bash"), line],
                         capture_output=True, text=True, cwd=cwd, timeout=30, env=completion_env())
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def fish_complete(line, cwd):
    if shutil.which("fish") is None:
        pytest.fail("fish missing: scripts/setup.sh installs it")
    script = f"{FISH_CURSOR}\nsource {os.path.join(COMPLETIONS, 's3mount.fish')}; complete -C {shlex_quote(line)}"
    out = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=30,
                         env=completion_env())
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return [l.split("\t")[0] for l in out.stdout.splitlines()]


def shlex_quote(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.mark.parametrize("complete", [bash_complete, fish_complete], ids=["bash", "fish"])
def test_completions_offer_options_values_and_mount_points(complete, tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "file").write_text("")
    offered = complete("s3mount --", tmp_path)
    assert not set(help_options()) - set(offered), "options of --help the completion does not offer"
    assert complete("s3mount --meta", tmp_path) == ["--metadata", "--metadata-ttl"]
    assert sorted(complete("s3mount --metadata ", tmp_path)) == ["head", "index", "none"]
    assert complete("s3mount st", tmp_path) == ["stats"]
    assert complete("s3mount -o ro,allow_", tmp_path) == ["ro,allow_other", "ro,allow_root"]
    assert complete("s3mount -o ro,endpoint_", tmp_path) == ["ro,endpoint_url="]
    assert sorted(complete("s3mount b m --metadata-ttl ", tmp_path)) == ["0", "60", "indefinite"]
    # The mount point, and the one argument of `stats`, are directories.
    assert complete("s3mount my-bucket m", tmp_path) in (["mnt"], ["mnt/"])
    assert complete("s3mount stats ", tmp_path) in (["mnt"], ["mnt/"])


def test_zsh_completion_parses():
    if shutil.which("zsh") is None:
        pytest.fail("zsh missing: scripts/setup.sh installs it")
    out = run(["zsh", "-n", os.path.join(COMPLETIONS, "_s3mount")])
    assert out.returncode == 0, out.stderr


def test_install_puts_man_page_and_completions_where_shells_and_man_look(tmp_path):
    env = dict(os.environ, DESTDIR=str(tmp_path), SKIP_BUILD="1", BIN=BIN)
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for src, dest in (("docs/s3mount.1", "usr/local/share/man/man1/s3mount.1"),
                      ("scripts/completions/s3mount.bash", "usr/local/share/bash-completion/completions/s3mount"),
                      ("scripts/completions/_s3mount", "usr/local/share/zsh/site-functions/_s3mount"),
                      ("scripts/completions/s3mount.fish", "usr/local/share/fish/vendor_completions.d/s3mount.fish")):
        assert read(os.path.join(tmp_path, dest)) == read(os.path.join(ROOT, src)), dest
    assert os.access(tmp_path / "usr/local/bin/s3mount", os.X_OK)
