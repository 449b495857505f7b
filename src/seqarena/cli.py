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


# --- explain --------------------------------------------------------------------------------

def _matrix_options(*specs: tuple[str, str]):
    """Options holding a matrix as text ("1,0;0,1"), handed as-is to seqarena.explain."""
    def decorate(f):
        for name, help_text in reversed(specs):
            f = click.option(f"--{name}", metavar="MATRIX", help=help_text)(f)
        return f
    return decorate


_X_HELP = ("x_1 .. x_T: one row is one scalar per step (\"1,2,3\"), several rows one vector per "
           "step (\"1,0;0,1\"). [default: 1,2,3]")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print every value at full precision as JSON.")


def _gate_options(gates: dict[str, str]) -> list[tuple[str, str]]:
    return [spec for g, name in gates.items() for spec in (
        (f"w-{g}", f"W_{g} (H x I): {name} weights on x_t."),
        (f"u-{g}", f"U_{g} (H x H): {name} weights on h_{{t-1}}."),
        (f"b-{g}", f"b_{g} (H): {name} bias."))]


def _show(explanation, as_json: bool) -> None:
    if as_json:
        echo_json(explanation.to_dict())
    else:
        click.echo(explanation.to_text())


@cli.group("explain")
def explain_group():
    """Worked examples: a recurrent cell or attention, computed step by step.

    Matrices are rows separated by ';' ("1,0;0,1"); a vector is one row or one column. Every
    value left out takes small fixed defaults (shown in the output); initial states are zero.
    """


@explain_group.command("rnn")
@_matrix_options(("x", _X_HELP),
                 ("w-h", "W_h (H x H): recurrent weights; its rows set the hidden size H."),
                 ("w-x", "W_x (H x I): input weights, I the width of x_t."),
                 ("b", "b (H): bias."),
                 ("h0", "h_0 (H): initial state. [default: zeros]"))
@click.option("--activation", default="tanh", show_default=True,
              help="f: tanh, relu, sigmoid or identity.")
@_json_option
def explain_rnn(as_json: bool, **inputs):
    """Elman RNN: h_t = f(W_h·h_{t-1} + W_x·x_t + b)."""
    from seqarena.explain import rnn

    _show(rnn(**inputs), as_json)


@explain_group.command("lstm", short_help="LSTM cell, gates i, f, g, o (torch.nn.LSTM).")
@_matrix_options(("x", _X_HELP),
                 *_gate_options({"i": "input gate", "f": "forget gate", "g": "cell candidate",
                                 "o": "output gate"}),
                 ("h0", "h_0 (H): initial state. [default: zeros]"),
                 ("c0", "c_0 (H): initial cell state. [default: zeros]"))
@_json_option
def explain_lstm(as_json: bool, **inputs):
    """LSTM, as torch.nn.LSTM: gates i, f, o = sigmoid(W·x_t + U·h_{t-1} + b), g the same with
    tanh; c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t). H is the rows of the U (or W) given."""
    from seqarena.explain import lstm

    _show(lstm(**inputs), as_json)


@explain_group.command("gru", short_help="GRU cell, gates r, z, n (torch.nn.GRU's convention).")
@_matrix_options(("x", _X_HELP),
                 *_gate_options({"r": "reset gate", "z": "update gate"}),
                 ("w-n", "W_n (H x I): candidate weights on x_t."),
                 ("u-n", "U_n (H x H): candidate weights on h_{t-1}."),
                 ("b-in", "b_in (H): candidate bias on the x_t side."),
                 ("b-hn", "b_hn (H): candidate bias on the h_{t-1} side, inside r_t*(...)."),
                 ("h0", "h_0 (H): initial state. [default: zeros]"))
@_json_option
def explain_gru(as_json: bool, **inputs):
    """GRU in PyTorch's convention: r, z = sigmoid(W·x_t + U·h_{t-1} + b),
    n_t = tanh(W_n·x_t + b_in + r_t*(U_n·h_{t-1} + b_hn)), h_t = (1-z_t)*n_t + z_t*h_{t-1}."""
    from seqarena.explain import gru

    _show(gru(**inputs), as_json)


@explain_group.command("attention", short_help="Multi-head scaled dot-product attention.")
@_matrix_options(("x", "X (L x D): one position per row. [default: 3 positions of width 4]"),
                 ("w-q", "W_q (D x Dk): Q = X·W_q."),
                 ("w-k", "W_k (D x Dk): K = X·W_k."),
                 ("w-v", "W_v (D x Dv): V = X·W_v."),
                 ("w-o", "W_o (Dv x Do): output projection. [default: identity]"))
@click.option("--heads", type=int, default=2, show_default=True,
              help="Heads; each takes its own Dk/heads columns of Q and K (Dv/heads of V).")
@click.option("--causal", is_flag=True, help="Position i attends only to positions j <= i.")
@_json_option
def explain_attention(as_json: bool, **inputs):
    """Multi-head attention: per head softmax(Q_h·K_h^T / sqrt(Dh))·V_h, heads concatenated,
    then ·W_o."""
    from seqarena.explain import attention

    _show(attention(**inputs), as_json)


# --- tasks ----------------------------------------------------------------------------------

@cli.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def tasks(names: tuple[str, ...], as_json: bool):
    """List the tasks (all, or NAMES) with their metric, head and parameters (defaults)."""
    from seqarena.tasks import describe_tasks

    rows = describe_tasks(names or None)
    if as_json:
        echo_json(rows)
        return
    from seqarena.table import format_table

    table = [{**r, "better": "higher" if r["higher_is_better"] else "lower"} for r in rows]
    click.echo(format_table(table, ["name", "metric", "better", "head", "summary"]))
    click.echo("\nparameters (defaults), set with KEY=VALUE:")
    for r in rows:
        click.echo(f"  {r['name']}: " + ", ".join(f"{k}={v!r}" for k, v in r["params"].items()))
