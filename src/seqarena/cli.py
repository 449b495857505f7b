"""The `seqarena` command: parse, validate, call library functions, print.

Every command is a thin layer over a function of the same name in the library. Errors a user can
fix are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys

import click

from seqarena import __version__
from seqarena.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="seqarena")
def cli():
    """Recurrent networks against Transformers, measured on your hardware."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and exit status 2 for anything a user can fix."""
    try:
        cli.main(args=argv, prog_name="seqarena", standalone_mode=False)
    except UserError as e:
        _fail(str(e))
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(2)
    except click.UsageError as e:
        hint = f" (see 'seqarena {e.ctx.command_path.split(' ', 1)[1]} --help')" \
            if e.ctx and " " in e.ctx.command_path else " (see 'seqarena --help')"
        _fail(e.format_message() + hint)
    except click.ClickException as e:
        _fail(e.format_message())
    except click.exceptions.Abort:
        _fail("aborted")
    except KeyboardInterrupt:
        _fail("interrupted")
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)


def _fail(message: str) -> None:
    click.echo(f"seqarena: error: {message}", err=True)
    sys.exit(2)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


# --- models ---------------------------------------------------------------------------------

@cli.command()
@click.option("--d-model", type=int, default=64, show_default=True, help="Model width D.")
@click.option("--layers", type=int, default=1, show_default=True, help="Stacked layers.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def models(d_model: int, layers: int, as_json: bool):
    """List the models with their size, causality and cost in sequence length L."""
    from seqarena.zoo import describe_models

    rows = describe_models(d_model=d_model, layers=layers)
    if as_json:
        echo_json(rows)
        return
    from seqarena.table import format_table

    click.echo(format_table(rows, ["name", "params", "causal", "train_cost", "decode_cost",
                                   "summary"]))
