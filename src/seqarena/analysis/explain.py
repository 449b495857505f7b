"""Worked examples: one recurrent cell or one attention layer, computed step by step.

Every intermediate is kept next to the equation that made it, so `seqarena explain` prints an
example a reader can follow with pencil and paper, and `--json` holds the exact float64 values.

References:
  Elman RNN  J. Elman, "Finding Structure in Time" (1990).
  LSTM       Hochreiter & Schmidhuber (1997), forget gate from Gers et al. (2000); gate order
             i, f, g, o and equations as torch.nn.LSTM.
  GRU        Cho et al. (2014), in the convention of torch.nn.GRU: the reset gate multiplies
             U_n·h + b_hn inside the tanh (Cho et al. apply it to h before U_n).
  Attention  Vaswani et al., "Attention Is All You Need" (2017), sections 3.2.1 and 3.2.2.
"""
# Recurrences: T steps, I width of x_t, H hidden size.
# Attention:   L positions, D width of X, Dk width of Q and K, Dv width of V, Do output width;
#              each head takes Dh = Dk / heads columns of Q and K and Dvh = Dv / heads of V.

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seqarena.errors import UserError

_MATRIX_HINT = "write numbers separated by ',' and rows by ';', e.g. \"1,0;0,1\""

# Default weights: one fixed pattern of small values cut to whatever shape the other inputs need,
# so that giving only --x (or only --w-h) still makes a complete, reproducible example.
_PATTERN = (0.5, -0.4, 0.3, 0.8, -0.6, 0.2, -0.3, 0.7, 0.1, -0.5, 0.6)
_DEFAULT_HIDDEN = 2
_DEFAULT_X = [[1.0], [2.0], [3.0]]                                      # three scalar steps
_DEFAULT_X_ATTENTION = [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "sigmoid": _sigmoid,
    "identity": lambda a: a,
}


# --- the worked example: named values in steps ------------------------------------------------

@dataclass
class Item:
    """One named value and the equation that produced it (empty for inputs)."""
    name: str
    value: np.ndarray
    equation: str = ""


@dataclass
class Step:
    title: str
    items: list[Item]


@dataclass
class Explanation:
    """A worked example: equations, inputs, every intermediate step by step, outputs."""
    kind: str
    title: str
    equations: list[str]
    notes: list[str]
    inputs: list[Item]
    steps: list[Step]
    outputs: list[Item]

    def to_dict(self) -> dict:
        """Plain data for JSON; floats are the exact float64 values."""
        def values(items):
            return {it.name: it.value.tolist() for it in items}

        return {
            "kind": self.kind, "title": self.title, "equations": self.equations,
            "notes": self.notes, "inputs": values(self.inputs),
            "steps": [{"title": s.title, "equations": {it.name: it.equation for it in s.items},
                       "values": values(s.items)} for s in self.steps],
            "outputs": values(self.outputs),
        }

    def to_text(self) -> str:
        """The example as a reader follows it, numbers rounded to 4 significant digits."""
        lines = [self.title, *("  " + e for e in self.equations), *self.notes]
        for title, items in [("Inputs", self.inputs), *((s.title, s.items) for s in self.steps),
                             ("Outputs", self.outputs)]:
            lines += ["", title, *_format_items(items)]
        return "\n".join(lines)


def _format_items(items: list[Item]) -> list[str]:
    """Vectors inline after an aligned label; matrices below their label, columns aligned."""
    labels = [f"{it.name} = {it.equation}" if it.equation else it.name for it in items]
    width = max(len(label) for label in labels)
    lines = []
    for label, it in zip(labels, items):
        shape = str(tuple(it.value.shape))
        if it.value.ndim == 1:
            cells = [f"{v:.4g}" for v in it.value]
            lines.append(f"  {label.ljust(width)}  {shape:<8} [ {'  '.join(cells)} ]")
            continue
        lines.append(f"  {label}  {shape}")
        cells = [[f"{v:.4g}" for v in row] for row in it.value]
        col_width = [max(len(c) for c in col) for col in zip(*cells)]
        lines += ["    [ " + "  ".join(c.rjust(w) for c, w in zip(row, col_width)) + " ]"
                  for row in cells]
    return lines


# --- inputs: text or arrays, checked against the shapes the equations need ----------------------

def parse_matrix(text: str, option: str) -> np.ndarray:
    """'1,2;3,4' -> [[1, 2], [3, 4]] as float64; a UserError naming `option` if malformed."""
    rows = []
    for r, row_text in enumerate(text.split(";"), 1):
        entries = [e.strip() for e in row_text.split(",")]
        if "" in entries:
            raise UserError(f"{option} {text!r}: row {r} has an empty entry; {_MATRIX_HINT}")
        row = []
        for e in entries:
            try:
                row.append(float(e))
            except ValueError:
                raise UserError(f"{option}: {e!r} is not a number; {_MATRIX_HINT}") from None
        rows.append(row)
    lengths = [len(row) for row in rows]
    if len(set(lengths)) > 1:
        raise UserError(f"{option} {text!r}: rows have {', '.join(map(str, lengths))} entries; "
                        f"every row needs the same number, e.g. \"1,2;3,4\"")
    return _finite(np.array(rows, dtype=np.float64), option)


def _finite(m: np.ndarray, option: str) -> np.ndarray:
    if not np.isfinite(m).all():
        raise UserError(f"{option}: entries must be finite numbers (no inf or nan)")
    return m


def _as_matrix(value, option: str) -> np.ndarray:
    """Text is parsed; a number or list becomes a 2-D float64 array (a flat list is one row)."""
    if isinstance(value, str):
        return parse_matrix(value, option)
    m = np.atleast_2d(np.array(value, dtype=np.float64))
    if m.ndim > 2:
        raise UserError(f"{option} must be a matrix, got shape {m.shape}")
    return _finite(m, option)


def _as_sequence(value, option: str) -> np.ndarray:
    """x_1 .. x_T as rows of a (T, I) array; a single row means one scalar per step."""
    m = _as_matrix(value, option)
    return m.T if m.shape[0] == 1 else m


def _describe(shape: tuple) -> str:
    if len(shape) == 1:
        return f"{shape[0]} entr{'y' if shape[0] == 1 else 'ies'}"
    return f"{shape[0]} row{'s' * (shape[0] != 1)} x {shape[1]} column{'s' * (shape[1] != 1)}"


def _params(given: dict, shapes: dict[str, tuple], sizes: str) -> dict[str, np.ndarray]:
    """Each input from `given` (text, array or None for a small default) checked against `shapes`.

    Names map to options (`w_h` -> --w-h); `sizes` says where the sizes in the shapes come from.
    Initial states default to zero, everything else to the fixed small pattern.
    """
    out = {}
    for k, (name, shape) in enumerate(shapes.items()):
        option = "--" + name.replace("_", "-")
        if given.get(name) is None:
            out[name] = (np.zeros(shape) if name in ("h0", "c0") else
                         np.resize(np.roll(_PATTERN, -4 * k), shape).astype(np.float64))
            continue
        m = _as_matrix(given[name], option)
        if len(shape) == 1 and 1 in m.shape:
            m = m.ravel()                                       # a vector as a row or a column
        if m.shape != shape:
            raise UserError(f"{option} has {_describe(m.shape)} but needs {_describe(shape)} "
                            f"({sizes}); pass {option} in that shape")
        out[name] = m
    return out


def _size_from(candidates: list[tuple[str, object, int]], default: int, what: str):
    """A size read off the first input given (its rows or columns, axis), else the default."""
    for name, value, axis in candidates:
        if value is not None:
            option = "--" + name.replace("_", "-")
            n = _as_matrix(value, option).shape[axis]
            return n, f"{what} = {n} from the {'rows' if axis == 0 else 'columns'} of {option}"
    return default, f"{what} = {default} by default"


def _recurrent_sizes(x, weights: dict, recurrent: list[str], inputs: list[str]):
    """x as (T, I), the hidden size H (rows of the first recurrent or input weight given), and
    a phrase naming both sizes for error messages."""
    xs = _as_sequence(_DEFAULT_X if x is None else x, "--x")
    candidates = [(n, weights.get(n), 0) for n in recurrent + inputs]
    H, where = _size_from(candidates, _DEFAULT_HIDDEN, "hidden size")
    return xs, H, f"{where}, each x_t has {_describe(xs.shape[1:])}"


# --- the recurrences ------------------------------------------------------------------------------

def rnn(x=None, w_h=None, w_x=None, b=None, h0=None, activation: str = "tanh") -> Explanation:
    """Elman RNN h_t = f(W_h·h_{t-1} + W_x·x_t + b), every step shown."""
    if activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {activation!r}; choose one of "
                        f"{', '.join(ACTIVATIONS)} (e.g. --activation tanh)")
    f = ACTIVATIONS[activation]
    given = {"w_h": w_h, "w_x": w_x, "b": b, "h0": h0}
    xs, H, sizes = _recurrent_sizes(x, given, ["w_h"], ["w_x"])
    p = _params(given, {"w_h": (H, H), "w_x": (H, xs.shape[1]), "b": (H,), "h0": (H,)}, sizes)

    h, steps, hs = p["h0"], [], []
    for t, x_t in enumerate(xs, 1):
        a = p["w_h"] @ h + p["w_x"] @ x_t + p["b"]
        h = f(a)
        hs.append(h)
        steps.append(Step(f"t = {t}", [
            Item(f"x_{t}", x_t),
            Item("a", a, f"W_h·h_{t - 1} + W_x·x_{t} + b"),
            Item(f"h_{t}", h, f"{activation}(a)"),
        ]))
    T = len(xs)
    return Explanation(
        kind="rnn", title="Elman RNN, step by step",
        equations=[f"h_t = {activation}(W_h·h_{{t-1}} + W_x·x_t + b)"],
        notes=[f"a is the step's pre-activation. Hidden size H = {H}, T = {T} steps."],
        inputs=[Item("x", xs), Item("W_h", p["w_h"]), Item("W_x", p["w_x"]), Item("b", p["b"]),
                Item("h_0", p["h0"])],
        steps=steps,
        outputs=[Item("H", np.stack(hs), f"rows h_1 .. h_{T}"), Item(f"h_{T}", h, "last state")],
    )


_LSTM_GATES = {"i": ("input gate", "sigmoid"), "f": ("forget gate", "sigmoid"),
               "g": ("cell candidate", "tanh"), "o": ("output gate", "sigmoid")}


def _gate(p: dict, g: str, x_t: np.ndarray, h: np.ndarray, t: int):
    a = p[f"w_{g}"] @ x_t + p[f"u_{g}"] @ h + p[f"b_{g}"]
    return a, Item(f"a_{g}", a, f"W_{g}·x_{t} + U_{g}·h_{t - 1} + b_{g}")


def lstm(x=None, h0=None, c0=None, **weights) -> Explanation:
    """LSTM cell (torch.nn.LSTM's equations), every step shown.

    weights: w_i, u_i, b_i, w_f, u_f, b_f, w_g, u_g, b_g, w_o, u_o, b_o; W_* is (H, I) on x_t,
    U_* is (H, H) on h_{t-1}, b_* is (H,). Any left out take small default values.
    """
    names = [f"{k}_{g}" for g in _LSTM_GATES for k in "wub"]
    _check_names(weights, names)
    given = {**weights, "h0": h0, "c0": c0}
    xs, H, sizes = _recurrent_sizes(x, given, [f"u_{g}" for g in _LSTM_GATES],
                                    [f"w_{g}" for g in _LSTM_GATES])
    I = xs.shape[1]
    shapes = {n: {"w": (H, I), "u": (H, H), "b": (H,)}[n[0]] for n in names}
    p = _params(given, {**shapes, "h0": (H,), "c0": (H,)}, sizes)

    h, c, steps, hs = p["h0"], p["c0"], [], []
    for t, x_t in enumerate(xs, 1):
        items, gate = [Item(f"x_{t}", x_t)], {}
        for g, (_, act) in _LSTM_GATES.items():
            a, item = _gate(p, g, x_t, h, t)
            gate[g] = ACTIVATIONS[act](a)
            items += [item, Item(f"{g}_{t}", gate[g], f"{act}(a_{g})")]
        c = gate["f"] * c + gate["i"] * gate["g"]
        tanh_c = np.tanh(c)
        h = gate["o"] * tanh_c
        hs.append(h)
        items += [Item(f"c_{t}", c, f"f_{t}*c_{t - 1} + i_{t}*g_{t}"),
                  Item(f"tanh(c_{t})", tanh_c),
                  Item(f"h_{t}", h, f"o_{t}*tanh(c_{t})")]
        steps.append(Step(f"t = {t}", items))
    T = len(xs)
    return Explanation(
        kind="lstm", title="LSTM, step by step",
        equations=[*(f"{g}_t = {act}(W_{g}·x_t + U_{g}·h_{{t-1}} + b_{g})".ljust(46) + name
                     for g, (name, act) in _LSTM_GATES.items()),
                   "c_t = f_t*c_{t-1} + i_t*g_t", "h_t = o_t*tanh(c_t)"],
        notes=["Gate order and equations as torch.nn.LSTM; each b_* stands for PyTorch's "
               "b_i* + b_h*. * is elementwise; a_* are the gates' pre-activations.",
               f"Hidden size H = {H}, T = {T} steps."],
        inputs=[Item("x", xs), *(Item(_symbol(n), p[n]) for n in names),
                Item("h_0", p["h0"]), Item("c_0", p["c0"])],
        steps=steps,
        outputs=[Item("H", np.stack(hs), f"rows h_1 .. h_{T}"), Item(f"h_{T}", h, "last state"),
                 Item(f"c_{T}", c, "last cell state")],
    )


def gru(x=None, h0=None, **weights) -> Explanation:
    """GRU cell in PyTorch's convention (torch.nn.GRU), every step shown.

    weights: w_r, u_r, b_r, w_z, u_z, b_z, w_n, u_n, b_in, b_hn; W_* is (H, I) on x_t, U_* is
    (H, H) on h_{t-1}, biases are (H,). Any left out take small default values.
    """
    names = ["w_r", "u_r", "b_r", "w_z", "u_z", "b_z", "w_n", "u_n", "b_in", "b_hn"]
    _check_names(weights, names)
    given = {**weights, "h0": h0}
    xs, H, sizes = _recurrent_sizes(x, given, ["u_r", "u_z", "u_n"], ["w_r", "w_z", "w_n"])
    I = xs.shape[1]
    shapes = {n: {"w": (H, I), "u": (H, H), "b": (H,)}[n[0]] for n in names}
    p = _params(given, {**shapes, "h0": (H,)}, sizes)

    h, steps, hs = p["h0"], [], []
    for t, x_t in enumerate(xs, 1):
        a_r, item_r = _gate(p, "r", x_t, h, t)
        a_z, item_z = _gate(p, "z", x_t, h, t)
        r, z = _sigmoid(a_r), _sigmoid(a_z)
        a_hn = p["u_n"] @ h + p["b_hn"]
        a_n = p["w_n"] @ x_t + p["b_in"] + r * a_hn
        n = np.tanh(a_n)
        h = (1.0 - z) * n + z * h
        hs.append(h)
        steps.append(Step(f"t = {t}", [
            Item(f"x_{t}", x_t),
            item_r, Item(f"r_{t}", r, "sigmoid(a_r)"),
            item_z, Item(f"z_{t}", z, "sigmoid(a_z)"),
            Item("a_hn", a_hn, f"U_n·h_{t - 1} + b_hn"),
            Item("a_n", a_n, f"W_n·x_{t} + b_in + r_{t}*a_hn"),
            Item(f"n_{t}", n, "tanh(a_n)"),
            Item(f"h_{t}", h, f"(1 - z_{t})*n_{t} + z_{t}*h_{t - 1}"),
        ]))
    T = len(xs)
    return Explanation(
        kind="gru", title="GRU, step by step",
        equations=["r_t = sigmoid(W_r·x_t + U_r·h_{t-1} + b_r)              reset gate",
                   "z_t = sigmoid(W_z·x_t + U_z·h_{t-1} + b_z)              update gate",
                   "n_t = tanh(W_n·x_t + b_in + r_t*(U_n·h_{t-1} + b_hn))   new state candidate",
                   "h_t = (1 - z_t)*n_t + z_t*h_{t-1}"],
        notes=["Convention: PyTorch's torch.nn.GRU, where r_t multiplies U_n·h_{t-1} + b_hn "
               "inside the tanh; b_r and b_z stand for PyTorch's b_ir + b_hr and b_iz + b_hz.",
               f"* is elementwise; a_* are pre-activations. Hidden size H = {H}, T = {T} steps."],
        inputs=[Item("x", xs), *(Item(_symbol(n), p[n]) for n in names), Item("h_0", p["h0"])],
        steps=steps,
        outputs=[Item("H", np.stack(hs), f"rows h_1 .. h_{T}"), Item(f"h_{T}", h, "last state")],
    )


def _symbol(name: str) -> str:
    """Option name to the symbol in the equations: w_i -> W_i, u_n -> U_n, b_hn -> b_hn."""
    return name[0].upper() + name[1:] if name[0] in "wu" else name


def _check_names(weights: dict, names: list[str]) -> None:
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise TypeError(f"unknown weights {unknown}; expected some of {names}")


# --- attention ------------------------------------------------------------------------------------

def _columns(first: int, last: int) -> str:
    return f"column {first}" if first == last else f"columns {first}-{last}"


def attention(x=None, w_q=None, w_k=None, w_v=None, w_o=None, heads: int = 2,
              causal: bool = False) -> Explanation:
    """Multi-head scaled dot-product attention over the rows of X, every head shown."""
    X = _as_matrix(_DEFAULT_X_ATTENTION if x is None else x, "--x")
    L, D = X.shape
    given = {"w_q": w_q, "w_k": w_k, "w_v": w_v}
    Dk, where_k = _size_from([("w_q", w_q, 1), ("w_k", w_k, 1)], D, "Dk")
    Dv, where_v = _size_from([("w_v", w_v, 1)], D, "Dv")
    sizes = f"X has {_describe(X.shape)}, {where_k}, {where_v}"
    p = _params(given, {"w_q": (D, Dk), "w_k": (D, Dk), "w_v": (D, Dv)}, sizes)
    if w_o is None:
        W_o = np.eye(Dv)
    else:
        W_o = _as_matrix(w_o, "--w-o")
        if W_o.shape[0] != Dv:
            raise UserError(f"--w-o has {_describe(W_o.shape)} but needs {Dv} rows, one per "
                            f"column of V ({sizes}); pass --w-o with {Dv} rows")
    if heads < 1:
        raise UserError(f"--heads {heads}: needs at least one head, e.g. --heads 1")
    for width, what in ((Dk, "Q and K"), (Dv, "V")):
        if width % heads:
            fits = [n for n in range(1, width + 1) if width % n == 0]
            raise UserError(f"--heads {heads} does not divide the {width} columns of {what}; "
                            f"choose --heads among {', '.join(map(str, fits))}")

    Q, K, V = X @ p["w_q"], X @ p["w_k"], X @ p["w_v"]           # (L, Dk), (L, Dk), (L, Dv)
    allowed = np.tril(np.ones((L, L), dtype=bool)) if causal else np.ones((L, L), dtype=bool)
    first = [Item("Q", Q, "X·W_q"), Item("K", K, "X·W_k"), Item("V", V, "X·W_v")]
    if causal:
        first.append(Item("M", allowed.astype(np.float64), "1 where position i may attend to j"))
    steps = [Step("Projections", first)]
    dh, dvh = Dk // heads, Dv // heads
    contexts = []
    for h in range(heads):
        qk, v = slice(h * dh, (h + 1) * dh), slice(h * dvh, (h + 1) * dvh)
        Q_h, K_h, V_h = Q[:, qk], K[:, qk], V[:, v]             # (L, Dh), (L, Dh), (L, Dvh)
        scores = Q_h @ K_h.T                                     # (L, L)
        # Dividing by sqrt(Dh) keeps the scores' spread independent of the head width, so the
        # softmax does not saturate as Dh grows.
        scaled = scores / math.sqrt(dh)
        masked = np.where(allowed, scaled, -np.inf)
        e = np.exp(masked - masked.max(axis=1, keepdims=True))  # exp(-inf) = 0: masked weight
        weights = e / e.sum(axis=1, keepdims=True)
        context = weights @ V_h                                  # (L, Dvh)
        contexts.append(context)
        n = h + 1
        softmax = (f"softmax of each row of scaled_{n} over j <= i (weight 0 after i)" if causal
                   else f"softmax of each row of scaled_{n}")
        steps.append(Step(f"Head {n} of {heads}", [
            Item(f"Q_{n}", Q_h, f"{_columns(qk.start + 1, qk.stop)} of Q"),
            Item(f"K_{n}", K_h, f"{_columns(qk.start + 1, qk.stop)} of K"),
            Item(f"V_{n}", V_h, f"{_columns(v.start + 1, v.stop)} of V"),
            Item(f"scores_{n}", scores, f"Q_{n}·K_{n}^T"),
            Item(f"scaled_{n}", scaled, f"scores_{n} / sqrt({dh})"),
            Item(f"weights_{n}", weights, softmax),
            Item(f"context_{n}", context, f"weights_{n}·V_{n}"),
        ]))
    concat = np.concatenate(contexts, axis=1)                    # (L, Dv)
    pieces = " | ".join(f"context_{n}" for n in range(1, heads + 1))
    steps.append(Step("Concatenate the heads", [Item("concat", concat, f"[{pieces}]")]))
    return Explanation(
        kind="attention",
        title=f"{'Causal a' if causal else 'A'}ttention, {heads} head{'s' * (heads != 1)}, "
              "step by step",
        equations=["Q = X·W_q,  K = X·W_k,  V = X·W_v    (positions are the rows of X)",
                   "head h: weights_h = softmax(Q_h·K_h^T / sqrt(Dh)), context_h = weights_h·V_h",
                   "output = [context_1 | ... | context_H]·W_o"],
        notes=[f"Head h takes its own block of columns of Q, K and V; Dh = {Dk}/{heads} = {dh}. "
               f"L = {L} positions." + (" W_o is the identity (none given)." if w_o is None
                                        else "")],
        inputs=[Item("X", X), Item("W_q", p["w_q"]), Item("W_k", p["w_k"]),
                Item("W_v", p["w_v"]), Item("W_o", W_o)],
        steps=steps,
        outputs=[Item("output", concat @ W_o, "concat·W_o")],
    )
