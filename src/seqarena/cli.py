"""The `seqarena` command: parse, validate, call library functions, print.

Every command is a thin layer over a function of the same name in the library. Errors a user can
fix are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import os
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


def _keep_denormals(ctx, param, value) -> None:
    from seqarena.runtime import set_keep_denormals

    set_keep_denormals(value)


keep_denormals_option = click.option(
    "--keep-denormals", is_flag=True, expose_value=False, callback=_keep_denormals,
    help="Keep subnormal floats instead of flushing them to zero on CPU (they can slow a "
         "recurrence 4-10x; also SEQARENA_KEEP_DENORMALS=1).")


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

    from seqarena.zoo import STATE_AT

    click.echo(format_table(rows, ["name", "family", "params", "causal", "train_cost",
                                   "decode_cost", "state", "summary"],
                            ["name", "family", "params", "causal", "train cost", "decode cost",
                             f"state (floats/layer at {STATE_AT} tokens)", "summary"]))


# --- explain --------------------------------------------------------------------------------

def _matrix_options(*specs: tuple[str, str]):
    """Options holding a matrix as text ("1,0;0,1"), handed as-is to seqarena.analysis.explain."""
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
    from seqarena.analysis.explain import rnn

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
    from seqarena.analysis.explain import lstm

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
    from seqarena.analysis.explain import gru

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
    from seqarena.analysis.explain import attention

    _show(attention(**inputs), as_json)


# --- train, compare, generate ---------------------------------------------------------------

def _training_options(f):
    """Options `train` and `compare` share; unset ones fall back to the TOML file, then defaults."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML file of settings; flags given here override its values."),
        click.option("--task", help="Task name (`seqarena tasks`)."),
        click.option("--steps", type=int, help="Optimizer steps."),
        click.option("--batch-size", type=int, help="Sequences per step."),
        click.option("--d-model", type=int, help="Model width D."),
        click.option("--layers", type=int, help="Stacked layers or blocks."),
        click.option("--lr", help="Peak learning rate (AdamW, warm-up, cosine); compare also "
                     "takes auto: each model's own, chosen on the validation split."),
        click.option("--weight-decay", type=float, help="AdamW weight decay on matrices."),
        click.option("--warmup", type=float, help="Fraction of the run spent warming up the lr."),
        click.option("--min-lr", type=float, help="Final lr as a fraction of --lr."),
        click.option("--clip", type=float, help="Largest gradient norm (0: no clipping)."),
        click.option("--dropout", type=float, help="Dropout inside the model."),
        click.option("--patience", type=int, help="Early stopping after N evaluations (0: off)."),
        click.option("--budget-seconds", type=float, help="Stop after this much training time."),
        click.option("--threads", type=int, help="CPU threads torch may use (0: every core, "
                     "shared among the processes of a data-parallel run)."),
        click.option("--device", help="cpu, cuda, cuda:N or auto."),
        click.option("--data-dir", help="Directory of a task's data files (e.g. LRA ListOps)."),
        click.option("--data", help="Your data for classify, translate or series-classify: a "
                     "file or a directory (see docs/tasks.md)."),
        click.option("--text", help="UTF-8 text file for text-lm."),
        click.option("--csv", help="CSV file for forecast (with --column)."),
        click.option("--column", help="Column of --csv to forecast."),
        click.option("--series", help="Bundled series for forecast (co2, sunspots)."),
        click.option("--task-arg", multiple=True, metavar="KEY=VALUE",
                     help="Another task parameter (repeatable)."),
        click.option("--tensorboard", is_flag=True, default=None,
                     help="Also write TensorBoard event files beside metrics.jsonl."),
        keep_denormals_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


class _WithDefaults(click.Command):
    """A command whose help ends with the defaults that unset options fall back to."""

    def __init__(self, *args, defaults, **kwargs):
        super().__init__(*args, **kwargs)
        self.defaults = defaults  # () -> dict, called only when help is shown

    def format_epilog(self, ctx, formatter):
        formatter.write_paragraph()
        formatter.write_text("Defaults: " + ", ".join(f"{k}={v}" for k, v in self.defaults().items()))


def _train_defaults() -> dict:
    import dataclasses

    from seqarena.config import TrainConfig

    return {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if v not in ({}, "")}


def _compare_defaults() -> dict:
    from seqarena.experiment.compare import DEFAULT_TRAIN, CompareConfig

    c, t = CompareConfig(), DEFAULT_TRAIN
    return {"models": ",".join(c.models), "seq_lens": ",".join(map(str, c.seq_lens)),
            "seeds": ",".join(map(str, c.seeds)), "task": t.task, "steps": t.steps,
            "budget_seconds": t.budget_seconds,
            "batch_size": t.batch_size, "d_model": t.d_model, "layers": t.layers,
            "lr": "auto" if c.lr_auto else t.lr, "lr_grid": ",".join(f"{v:g}" for v in c.lr_grid),
            "lr_budget": c.lr_budget, "jobs": c.jobs, "eval_every": t.eval_every,
            "threads": t.threads, "device": t.device}


def _flag_layer(given: dict) -> dict:
    """The options a user gave, as TrainConfig fields (data flags and --*-arg into *_args)."""
    from seqarena.config import parse_assignments

    given = dict(given)
    task_args = parse_assignments(given.pop("task_arg", ()), "--task-arg")
    model_args = parse_assignments(given.pop("model_arg", ()), "--model-arg")
    for key in ("data_dir", "data", "text", "csv", "column", "series"):
        if given.get(key) is not None:
            task_args[key] = given[key]
        given.pop(key, None)
    layer = {k: v for k, v in given.items() if v is not None}
    if "lr" in layer and layer["lr"] != "auto":
        try:
            layer["lr"] = float(layer["lr"])
        except ValueError:
            raise UserError(f"--lr expects a number (or auto, for compare), got "
                            f"{layer['lr']!r}") from None
    if task_args:
        layer["task_args"] = task_args
    if model_args:
        layer["model_args"] = model_args
    return layer


@cli.command(cls=_WithDefaults, defaults=_train_defaults)
@click.option("--model", help="Model name (`seqarena models`).")
@click.option("--seq-len", type=int, help="Sequence length L.")
@click.option("--seed", type=int, help="Seed of data, weights and dropout.")
@click.option("--eval-every", type=int, help="Evaluate every N steps (0: at the end only).")
@click.option("--checkpoint-every", type=int, help="Save a checkpoint every N steps.")
@click.option("--keep-checkpoints", type=int, help="How many of the newest checkpoints to keep.")
@click.option("--log-every", type=int, help="Write a metrics.jsonl line every N steps.")
@click.option("--out", help="Parent directory of run directories (default: runs).")
@click.option("--name", help="Run directory name (default: <model>-<task>-L<seq_len>-s<seed>).")
@click.option("--model-arg", multiple=True, metavar="KEY=VALUE",
              help="Another model config field (repeatable).")
@click.option("--resume", is_flag=True, help="Continue the run from its newest checkpoint.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train data-parallel in N processes on this machine, as torchrun "
                   "--standalone --nproc-per-node N -m seqarena train does.")
@_training_options
def train(config_file, resume, nproc, **given):
    """Train one model on one task into runs/<name>/."""
    from seqarena import runtime
    from seqarena.training import distributed
    from seqarena.config import resolve_config
    from seqarena.training.train import train as run_training, train_processes

    runtime.setup()
    try:
        if given.get("lr") == "auto":
            raise UserError("--lr auto picks rates across a comparison (seqarena compare); "
                            "train takes a number, e.g. --lr 1e-3")
        cfg = resolve_config(config_file, _flag_layer(given), resume=resume)
        if nproc > 1 and distributed.launched():
            raise UserError("--nproc starts processes of its own; under torchrun leave it out")
        r = train_processes(cfg, nproc, resume) if nproc > 1 else \
            run_training(cfg, resume=resume).result
    except UserError:
        if distributed.env_rank() > 0:  # under torchrun rank 0 says it, once
            sys.exit(2)
        raise
    if distributed.env_rank() > 0:
        return
    if r.status == "nan":
        raise UserError(r.stopped)
    metric = "-" if r.metric is None else f"{r.metric:.4g}"
    world = r.world_size
    click.echo(f"{r.model} on {r.task} (L={r.seq_len}, {r.params:,} parameters): "
               f"{r.split} {r.metric_name} {metric} after {r.steps} steps, "
               f"{r.train_tokens_per_s:,.0f} train tokens/s"
               f"{f' over {world} processes' if world > 1 else ''}, {r.wall_s:.1f} s")
    if r.stopped:
        click.echo(r.stopped)
    if r.truncated:
        click.echo(f"{r.truncated} example(s) longer than seq_len={r.seq_len} were cut to it")
    click.echo(f"wrote {cfg.run_dir}")


def _csv(value: str | None, kind: type, flag: str):
    if value is None:
        return None
    try:
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects a comma-separated list of {kind.__name__}s, "
                        f"got {value!r}") from None


@cli.command(cls=_WithDefaults, defaults=_compare_defaults)
@click.option("--models", help="Comma-separated models (default: rnn,lstm,gru,mingru,transformer).")
@click.option("--seq-lens", help="Comma-separated sequence lengths (default: 50,200).")
@click.option("--seeds", help="Comma-separated seeds; several give the mean with an interval "
              "over seeds (default: 0).")
@click.option("--params", type=int, help="Parameter target (default: the largest model's count at --d-model).")
@click.option("--out", help="Compare directory (default: runs/compare-<date>-<time>).")
@click.option("--lr-grid",
              help="Comma-separated rates --lr auto tries (default: 3e-4,1e-3,3e-3,1e-2).")
@click.option("--lr-budget", type=float,
              help="The lr search's longest run as a fraction of the budget (default: 0.25).")
@click.option("--jobs", type=int, help="Runs at once, each in its own process (default: 1); "
              "with --executor ray and no --address: the local Ray instance's CPUs / --threads.")
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]),
              default="local", show_default=True,
              help="Where the runs run: local processes, or Ray tasks (pip install \".[ray]\").")
@click.option("--address", help="With --executor ray: join the cluster at auto or HOST:PORT "
              "(default: start a local Ray instance). --out must then be a shared path.")
@click.option("--resume", is_flag=True, help="Continue the comparison in --out: finished runs "
              "are read back, unfinished ones continue from their checkpoints.")
@_training_options
def compare(config_file, models, seq_lens, seeds, lr_grid, lr_budget, jobs, executor_name,
            address, resume, **given):
    """Train several models on one task under one budget, side by side (the main job)."""
    from seqarena import runtime
    from seqarena.experiment.compare import compare as run_compare, compare_config_from
    from seqarena.config import read_toml

    runtime.setup()
    lists = {"models": _csv(models, str, "--models"), "seq_lens": _csv(seq_lens, int, "--seq-lens"),
             "seeds": _csv(seeds, int, "--seeds"), "lr_grid": _csv(lr_grid, float, "--lr-grid"),
             "lr_budget": lr_budget, "jobs": jobs}
    if lr_grid is not None and not lists["lr_grid"]:
        raise UserError(f"--lr-grid lists no learning rate, got {lr_grid!r}; e.g. 3e-4,1e-3,3e-3")
    flags = {**_flag_layer(given), **{k: v for k, v in lists.items() if v is not None}}
    cfg = compare_config_from(read_toml(config_file) if config_file else {}, flags,
                              where=config_file or "flags")
    if executor_name == "local":
        if address:
            raise UserError("--address joins a Ray cluster: add --executor ray")
        outcome = run_compare(cfg, echo=click.echo, resume=resume)
    else:
        from seqarena.experiment.cluster import RayExecutor

        threads = cfg.train.threads or os.cpu_count() or 1
        cpus = jobs * threads if jobs and not address else None
        with RayExecutor(address, num_cpus=cpus) as executor:
            outcome = run_compare(cfg, echo=click.echo, resume=resume, executor=executor)
    from seqarena.report import write_report

    click.echo("")
    click.echo(render_summary(outcome.summary))
    click.echo(f"wrote {outcome.out / 'summary.json'} ({outcome.summary.wall_s:.0f} s)")
    click.echo(f"report: {write_report([outcome.out], outcome.out / 'report.html', log=click.echo)}")


def render_summary(summary) -> str:
    """The comparison's table, notes and verdicts as terminal text."""
    from seqarena.experiment.summary import table_rows
    from seqarena.table import format_table

    rows, columns, headers = table_rows(summary)
    lines = [format_table(rows, columns, headers)]
    if summary.baselines:
        lines.append("baselines: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.baselines.items()))
    lines.append("metric: on the test split, [95 % bootstrap interval]; train tok/s: median of the "
                 "logged windows [their 25th, 75th percentile]; train s: training steps only "
                 "(evaluation excluded); peak MiB: one training step (forward and backward) above "
                 "the weights and optimizer state")
    lines.append(summary.coverage)
    for f in summary.failed:
        lines.append(f"failed: {f.model} L={f.seq_len} seed {f.seed}: {f.status}"
                     + (f" ({f.why})" if f.why else ""))
    lines.append("")
    lines += [v["text"] for v in summary.verdicts]
    return "\n".join(lines)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--max-new-tokens", type=int, default=200, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Sampling temperature; 0 is greedy.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def generate(run_dir, prompt, max_new_tokens, temperature, seed, device):
    """Sample text from a trained run (its config.json and newest checkpoint)."""
    from seqarena.training.inference import generate as sample

    click.echo(sample(run_dir, prompt, max_new_tokens, temperature, seed, device))


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


# --- bench ----------------------------------------------------------------------------------

def _bench_defaults() -> dict:
    from seqarena.bench.command import defaults_text

    return defaults_text()


@cli.command(cls=_WithDefaults, defaults=_bench_defaults)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file of sweep settings (SweepConfig's fields); flags given here win.")
@click.option("--models", help="Comma-separated NAME or NAME:IMPL.")
@click.option("--seq-lens", help="Comma-separated lengths L.")
@click.option("--batch-size", help="Comma-separated batch sizes B.")
@click.option("--d-model", help="Comma-separated widths D.")
@click.option("--layers", help="Comma-separated layer counts.")
@click.option("--modes", help="Comma-separated of train, forward, prefill, decode.")
@click.option("--threads", help="Comma-separated CPU thread counts, 'all' = every core.")
@click.option("--device", help="Comma-separated of cpu, cuda.")
@click.option("--dtype", help="Comma-separated of float32, bfloat16, float16.")
@click.option("--peers", is_flag=False, flag_value="all",
              help="Also time other implementations (torch-transformer, torch-lstm, torch-gru, "
                   "x-transformers, x-transformers-default, mingru-pytorch, mambapy, manual-attention): comma-separated "
                   "names, or no value for all.")
@click.option("--quick", is_flag=True, help="Every model at three short lengths, small shapes.")
@click.option("--time-budget", type=float,
              help="Seconds per point before it is recorded as a timeout (time_budget_s).")
@click.option("--min-run-time", type=float,
              help="Timed seconds per point after warm-up (min_run_time_s).")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json instead of the table.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Directory for bench.json and bench.csv (default: runs/bench-<date>-<time>).")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="An earlier bench.json: print each point as a ratio to its figure there, with "
                   "an interval, flagging moves outside the noise.")
@click.option("--rounds", type=int, help="Rounds per point, contenders interleaved.")
@keep_denormals_option
def bench(config_file, models, seq_lens, batch_size, d_model, layers, modes, threads, device,
          dtype, peers, quick, time_budget, min_run_time, as_json, out, baseline, rounds):
    """Time training, prefill and decoding of every model along L; FLOPs, MFU, memory, crossovers.

    On a machine whose cores are all busy already, OpenMP threads wait passively instead of
    spinning (OMP_WAIT_POLICY=PASSIVE, unless set): see seqarena.bench.openmp.
    """
    from seqarena.bench.openmp import choose_wait_policy

    choose_wait_policy()  # before torch loads OpenMP
    from seqarena import runtime

    runtime.setup()  # before the first parallel loop starts OpenMP's threads, which inherit it
    from seqarena.bench.command import bench as run_bench, config_from_options, parse_list, render

    from seqarena.config import read_toml

    config = config_from_options(
        quick, read_toml(config_file) if config_file else {}, config_file or "flags",
        models=parse_list("--models", models), seq_lens=parse_list("--seq-lens", seq_lens, int),
        batch_sizes=parse_list("--batch-size", batch_size, int),
        d_models=parse_list("--d-model", d_model, int), layers=parse_list("--layers", layers, int),
        modes=parse_list("--modes", modes), threads=parse_list("--threads", threads, int),
        devices=parse_list("--device", device), dtypes=parse_list("--dtype", dtype),
        peers=parse_list("--peers", peers), time_budget_s=time_budget, min_run_time_s=min_run_time,
        rounds=rounds)

    def progress(r):
        speed = f"{r.tokens_per_s:,.0f} tok/s" if r.tokens_per_s else r.status
        click.echo(f"  {r.model} ({r.impl}) {r.mode} L={r.seq_len} B={r.batch} "
                   f"{r.device}/{r.threads}t: {speed}", err=True)

    run = run_bench(config, out, on_result=progress, baseline=baseline)
    from seqarena.report import write_report

    run.files.append(write_report([run.out], run.out / "report.html", log=lambda line: None))
    if as_json:
        echo_json(run.doc)
    else:
        click.echo(render(run))


# --- project --------------------------------------------------------------------------------

@cli.command()
@click.argument("bench_json", type=click.Path(dir_okay=False))
@click.option("--device", "device_name", help="A device of the shipped table (h100, a100, l4, "
              "...; `--device list` names them all), or give the three numbers below.")
@click.option("--peak-flops", type=float, help="Your device's dense peak, FLOP/s.")
@click.option("--bandwidth", type=float, help="Your device's memory bandwidth, bytes/s.")
@click.option("--floor-s", type=float, help="Seconds one dependent step costs (kernel launch).")
@click.option("--prompts", help="Prompt lengths P of the ledger, e.g. 256,1024,4096 (default: "
              "every measured prefill length).")
@click.option("--generated", help="Generated tokens G of the ledger, e.g. 64,1024.")
@click.option("--dtype", help="Project to this dtype (float32, bfloat16, float16); default: "
              "the bench's.")
@click.option("--json", "as_json", is_flag=True, help="Print the projection as JSON.")
def project(bench_json, device_name, peak_flops, bandwidth, floor_s, prompts, generated, dtype,
            as_json):
    """Project a bench run to hardware you do not have: each point's time, the crossovers and
    the serving ledger there, and the projection's own error measured on this machine."""
    import dataclasses

    from seqarena.bench.command import parse_list, read_bench
    from seqarena.bench.projection import DEVICES, device_from_args, project_bench, render_text

    if device_name == "list":
        for d in DEVICES.values():
            click.echo(f"{d.name}: {d.source}")
        return
    doc = read_bench(bench_json, "the run to project")
    device = device_from_args(device_name, peak_flops, bandwidth, floor_s)
    report = project_bench(doc, device, prompts=parse_list("--prompts", prompts, int),
                           generated=parse_list("--generated", generated, int), dtype=dtype)
    if as_json:
        echo_json(dataclasses.asdict(report))
    else:
        click.echo(render_text(report))


# --- report ---------------------------------------------------------------------------------

@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="The HTML file to write (default: report.html in the first PATH).")
def report(paths, out):
    """One self-contained HTML page from run, compare and bench directories and analyses.

    Charts are also written as PNG and SVG beside it, in <name>_figures/.
    """
    from seqarena.report import write_report

    path = write_report(list(paths), out, log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {path}")


# --- analyze --------------------------------------------------------------------------------

@cli.group()
@keep_denormals_option
def analyze():
    """Look inside the models: gradient flow through time, attention maps, hidden states."""
    from seqarena import runtime

    runtime.setup()


class _GradientOption(click.Option):
    """An option of `analyze gradients` whose help shows GradientConfig's default, read only when
    help is shown: seqarena.analysis.analyze imports torch, which must not load when this module does
    (`seqarena bench` chooses OpenMP's wait policy before torch starts OpenMP)."""

    def get_help_record(self, ctx):
        from seqarena.analysis.analyze import GradientConfig
        from seqarena.config import default

        value = default(GradientConfig, self.name)
        shown = ",".join(value) if isinstance(value, tuple) else value
        names, text = super().get_help_record(ctx)
        return names, f"{text} [default: {shown}]"


def _gradient_option(name: str, help_text: str, kind: type | None = None):
    return click.option(f"--{name.replace('_', '-')}", type=kind, help=help_text,
                        cls=_GradientOption)


@analyze.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file of settings; flags given here override its values.")
@_gradient_option("models", "Comma-separated model names.")
@_gradient_option("task", "A task with one output per sequence.")
@_gradient_option("seq_len", "Sequence length L.", int)
@_gradient_option("steps", "Training steps before the 'trained' measurement.", int)
@_gradient_option("batch_size", "Sequences per step.", int)
@_gradient_option("d_model", "Model width D.", int)
@_gradient_option("layers", "Stacked layers.", int)
@_gradient_option("lr", "Peak learning rate.", float)
@_gradient_option("clip", "Gradient-norm threshold of the clipped run.", float)
@_gradient_option("seed", "Seed of weights, data and the measured batch.", int)
@_gradient_option("threads", "CPU threads.", int)
@click.option("--out", type=click.Path(file_okay=False), default="runs/gradients",
              show_default=True, help="Directory for gradients.json and its charts.")
def gradients(config_file, out, **given):
    """‖d loss / d x_t‖ against distance from the output: vanishing and exploding gradients."""
    from seqarena.analysis.analyze import GradientConfig, gradient_flow
    from seqarena.config import layered, read_toml

    flags = {k: v for k, v in given.items() if v is not None}
    if "models" in flags:
        flags["models"] = _csv(flags["models"], str, "--models")
    cfg = layered(GradientConfig, read_toml(config_file) if config_file else {}, flags,
                  where=config_file or "flags")
    path = gradient_flow(cfg, out, progress=lambda line: click.echo(f"  {line}", err=True))
    from seqarena.report import write_analysis_charts

    write_analysis_charts(path)
    click.echo(f"wrote {path} and its charts (seqarena report {out} shows them)")


@analyze.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False),
              help="Directory for attention.json and its chart (default: RUN_DIR/analysis).")
@click.option("--sample", type=int, default=0, show_default=True,
              help="Which held-out example to look at.")
@click.option("--max-positions", type=int, default=96, show_default=True,
              help="Show at most this many positions (maps grow as L x L).")
def attention(run_dir, out, sample, max_positions):
    """Attention maps of a trained transformer per layer and head; for a recurrent model, h_t."""
    from seqarena.analysis.analyze import attention_maps

    if sample < 0 or max_positions <= 0:
        raise UserError("--sample must be >= 0 and --max-positions positive")
    path = attention_maps(run_dir, out, sample=sample, max_positions=max_positions)
    from seqarena.report import write_analysis_charts

    write_analysis_charts(path)
    click.echo(f"wrote {path} and its chart")
