import subprocess
import sys

from seqarena import __version__


def run(*args):
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True, text=True)


def test_version_prints_package_version():
    r = run("--version")
    assert r.returncode == 0
    assert __version__ in r.stdout


def test_unknown_command_is_one_line_and_status_2():
    r = run("no-such-command")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "no-such-command" in r.stderr
    assert "Traceback" not in r.stderr
