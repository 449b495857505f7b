"""The README's commands are real: cheap ones run verbatim, the rest name only options that exist."""

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from seqarena.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAP = ("models", "explain", "tasks")


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("seqarena ")]


def resolve(args):
    """The click command an argument list reaches, and the arguments left for it."""
    command = cli
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command, args = command.commands[args[0]], args[1:]
    return command, args


def test_readme_has_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_readme_command(args):
    command, rest = resolve(list(args))
    assert not isinstance(command, click.Group), f"{args} does not name a command"
    if args[0] in CHEAP:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return
    known = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{word} is not an option of seqarena {args[0]}"


def test_the_headline_command_runs_with_its_defaults_at_a_smaller_budget(tmp_path):
    """The README's first command, `seqarena compare` with nothing else, through the CLI: every
    default (models, lengths, the lr search at every length, verdicts) but the steps, cut from
    400 to 80 so the test stays short."""
    (headline,) = [line for line in re.findall(r"```bash\n(.*?)```", README.read_text(),
                                                flags=re.S)[0].splitlines() if line.strip()]
    assert headline == "pip install . && seqarena compare"
    result = CliRunner().invoke(cli, ["compare", "--steps", "80", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    out = result.output
    for L in (50, 200):
        assert f"lr chosen at L={L}: rnn " in out
        for question in ("best at equal steps", "fastest to train"):
            assert f"L={L}, {question}: " in out
    assert "lr check at L=200: the finalists again" in out
    assert "intervals and paired tests cover the test sample" in out
    assert (tmp_path / "c" / "report.html").is_file()
