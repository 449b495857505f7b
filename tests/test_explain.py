"""`seqarena explain`: every printed number checked against a separate numpy computation of the
same equations (and torch.nn.LSTMCell / GRUCell in float64), bad input checked end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from seqarena.analysis import explain
from seqarena.cli import cli
from seqarena.errors import UserError

ATOL = 1e-12


def explain_json(*args):
    result = CliRunner().invoke(cli, ["explain", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def close(actual, expected):
    np.testing.assert_allclose(np.array(actual, dtype=np.float64), expected, rtol=0, atol=ATOL)


def text(m: np.ndarray) -> str:
    """A matrix as command-line text, exact: repr of a float64 reads back to the same value."""
    return ";".join(",".join(repr(float(v)) for v in row) for row in np.atleast_2d(m))


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


# --- references: the equations written out again, plainly -----------------------------------------

def reference_rnn(xs, W_h, W_x, b, h, f):
    steps = []
    for x in xs:
        a = W_h.dot(h) + W_x.dot(x) + b
        h = f(a)
        steps.append({"a": a, "h": h})
    return steps


def reference_lstm(xs, W, U, b, h, c):
    steps = []
    for x in xs:
        pre = {g: W[g].dot(x) + U[g].dot(h) + b[g] for g in "ifgo"}
        i, f, o = sigmoid(pre["i"]), sigmoid(pre["f"]), sigmoid(pre["o"])
        g = np.tanh(pre["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
        steps.append({"pre": pre, "i": i, "f": f, "g": g, "o": o, "c": c, "h": h})
    return steps


def reference_gru(xs, W, U, b, b_in, b_hn, h):
    steps = []
    for x in xs:
        r = sigmoid(W["r"].dot(x) + U["r"].dot(h) + b["r"])
        z = sigmoid(W["z"].dot(x) + U["z"].dot(h) + b["z"])
        n = np.tanh(W["n"].dot(x) + b_in + r * (U["n"].dot(h) + b_hn))
        h = (1 - z) * n + z * h
        steps.append({"r": r, "z": z, "n": n, "h": h})
    return steps


def reference_attention(X, Wq, Wk, Wv, Wo, heads, causal):
    Q, K, V = X.dot(Wq), X.dot(Wk), X.dot(Wv)
    L = X.shape[0]
    dk, dv = Q.shape[1] // heads, V.shape[1] // heads
    per_head = []
    for h in range(heads):
        q, k, v = Q[:, h * dk:(h + 1) * dk], K[:, h * dk:(h + 1) * dk], V[:, h * dv:(h + 1) * dv]
        scores = q.dot(k.T)
        scaled = scores / np.sqrt(dk)
        weights = np.zeros((L, L))
        for i in range(L):
            seen = i + 1 if causal else L
            e = np.exp(scaled[i, :seen] - scaled[i, :seen].max())
            weights[i, :seen] = e / e.sum()
        per_head.append({"Q": q, "K": k, "V": v, "scores": scores, "scaled": scaled,
                         "weights": weights, "context": weights.dot(v)})
    concat = np.hstack([p["context"] for p in per_head])
    return {"Q": Q, "K": K, "V": V, "heads": per_head, "concat": concat, "output": concat.dot(Wo)}


# --- checks of the JSON against the references ----------------------------------------------------

def inputs_of(out):
    return {k: np.array(v) for k, v in out["inputs"].items()}


def check_rnn(out, f):
    p = inputs_of(out)
    ref = reference_rnn(p["x"], p["W_h"], p["W_x"], p["b"], p["h_0"], f)
    for t, (step, r) in enumerate(zip(out["steps"], ref, strict=True), 1):
        close(step["values"][f"x_{t}"], p["x"][t - 1])
        close(step["values"]["a"], r["a"])
        close(step["values"][f"h_{t}"], r["h"])
    close(out["outputs"]["H"], np.stack([r["h"] for r in ref]))
    close(out["outputs"][f"h_{len(ref)}"], ref[-1]["h"])
    return ref


def check_lstm(out):
    p = inputs_of(out)
    W, U, b = ({g: p[f"{k}_{g}"] for g in "ifgo"} for k in ("W", "U", "b"))
    ref = reference_lstm(p["x"], W, U, b, p["h_0"], p["c_0"])
    for t, (step, r) in enumerate(zip(out["steps"], ref, strict=True), 1):
        v = step["values"]
        for g in "ifgo":
            close(v[f"a_{g}"], r["pre"][g])
            close(v[f"{g}_{t}"], r[g])
        close(v[f"c_{t}"], r["c"])
        close(v[f"tanh(c_{t})"], np.tanh(r["c"]))
        close(v[f"h_{t}"], r["h"])
    T = len(ref)
    close(out["outputs"][f"h_{T}"], ref[-1]["h"])
    close(out["outputs"][f"c_{T}"], ref[-1]["c"])
    return p, ref


def check_gru(out):
    p = inputs_of(out)
    W, U = ({g: p[f"{k}_{g}"] for g in "rzn"} for k in ("W", "U"))
    b = {g: p[f"b_{g}"] for g in "rz"}
    ref = reference_gru(p["x"], W, U, b, p["b_in"], p["b_hn"], p["h_0"])
    for t, (step, r) in enumerate(zip(out["steps"], ref, strict=True), 1):
        v = step["values"]
        for g in "rzn":
            close(v[f"{g}_{t}"], r[g])
        close(v[f"h_{t}"], r["h"])
    close(out["outputs"][f"h_{len(ref)}"], ref[-1]["h"])
    return p, ref


def check_attention(out, heads, causal=False):
    p = inputs_of(out)
    ref = reference_attention(p["X"], p["W_q"], p["W_k"], p["W_v"], p["W_o"], heads, causal)
    projections, *head_steps, combine = out["steps"]
    for name in "QKV":
        close(projections["values"][name], ref[name])
    assert len(head_steps) == heads
    for n, (step, r) in enumerate(zip(head_steps, ref["heads"]), 1):
        for name in ("Q", "K", "V", "scores", "scaled", "weights", "context"):
            close(step["values"][f"{name}_{n}"], r[name])
    close(combine["values"]["concat"], ref["concat"])
    close(out["outputs"]["output"], ref["output"])
    return p, ref


# --- default runs and the documented example command lines ----------------------------------------

def test_rnn_default_matches_numpy_with_x_123_and_zero_state():
    out = explain_json("rnn")
    p = inputs_of(out)
    close(p["x"], [[1], [2], [3]])
    close(p["h_0"], np.zeros(p["W_h"].shape[0]))
    check_rnn(out, np.tanh)


def test_rnn_example_command_line_matches_hand_computation():
    out = explain_json("rnn", "--x", "1,2,3", "--w-h", "0.5", "--w-x", "2", "--b", "1",
                       "--activation", "relu")
    ref = check_rnn(out, lambda a: np.maximum(a, 0))
    # relu(0.5*h + 2*x + 1) from h = 0: 3, 6.5, 10.25
    close([r["h"][0] for r in ref], [3.0, 6.5, 10.25])


@pytest.mark.parametrize("activation, f", [("sigmoid", sigmoid), ("identity", lambda a: a)])
def test_rnn_vector_inputs_and_other_activations_match_numpy(activation, f):
    rng = np.random.default_rng(0)
    W_h, W_x, b, h0 = rng.normal(size=(3, 3)), rng.normal(size=(3, 2)), rng.normal(size=3), \
        rng.normal(size=3)
    out = explain_json("rnn", "--x", "1,0;0,1;0.5,-2;3,1", "--w-h", text(W_h), "--w-x",
                       text(W_x), "--b", text(b), "--h0", text(h0), "--activation", activation)
    close(out["inputs"]["W_h"], W_h)
    assert len(check_rnn(out, f)) == 4


def test_default_weights_take_the_shape_the_given_inputs_need():
    out = explain_json("rnn", "--x", "1,0,2;0,1,0", "--w-h", "1,0,0;0,1,0;0,0,1")
    assert np.array(out["inputs"]["W_x"]).shape == (3, 3)
    check_rnn(out, np.tanh)


def test_lstm_default_matches_numpy():
    check_lstm(explain_json("lstm"))


def test_gru_default_matches_numpy():
    check_gru(explain_json("gru"))


def test_attention_default_is_multi_head_and_matches_numpy():
    out = explain_json("attention")
    assert len(out["inputs"]["X"]) >= 2
    close(out["inputs"]["W_o"], np.eye(len(out["inputs"]["W_v"][0])))
    check_attention(out, heads=2)


def test_attention_example_command_line_matches_numpy():
    out = explain_json("attention", "--x", "1,0;0,1;1,1", "--w-q", "1,0;0,1", "--w-k", "1,0;0,1",
                       "--w-v", "1,2;3,4", "--heads", "1")
    p, ref = check_attention(out, heads=1)
    close(p["X"], [[1, 0], [0, 1], [1, 1]])
    # one head of width 2: scores are X·X^T, scaled by 1/sqrt(2)
    X = p["X"]
    close(ref["heads"][0]["scaled"], X.dot(X.T) / np.sqrt(2))


@pytest.mark.parametrize("heads, causal", [(2, False), (3, True), (6, True)])
def test_attention_multi_head_causal_and_output_projection_match_numpy(heads, causal):
    rng = np.random.default_rng(heads)
    X, Wq, Wk, Wv, Wo = (rng.normal(size=s) for s in [(4, 3), (3, 6), (3, 6), (3, 6), (6, 2)])
    args = ["--x", text(X), "--w-q", text(Wq), "--w-k", text(Wk), "--w-v", text(Wv),
            "--w-o", text(Wo), "--heads", str(heads)]
    out = explain_json("attention", *args, *(["--causal"] if causal else []))
    p, ref = check_attention(out, heads, causal)
    assert np.array(out["outputs"]["output"]).shape == (4, 2)
    if causal:
        assert np.all(np.triu(ref["heads"][0]["weights"], 1) == 0)
        assert np.all(np.triu(np.array(out["steps"][1]["values"]["weights_1"]), 1) == 0)


# --- second reference: torch.nn cells in float64 with the same weights ----------------------------

def random_gate_args(rng, names, H, I):
    shapes = {"w": (H, I), "u": (H, H), "b": (H,)}
    values = {n: rng.normal(size=shapes[n[0]]) for n in names}
    return values, [a for n, v in values.items() for a in ("--" + n.replace("_", "-"), text(v))]


def test_lstm_matches_torch_lstm_cell_with_copied_weights():
    rng = np.random.default_rng(1)
    H, I = 3, 2
    values, args = random_gate_args(rng, [f"{k}_{g}" for g in "ifgo" for k in "wub"], H, I)
    h0, c0 = rng.normal(size=H), rng.normal(size=H)
    out = explain_json("lstm", "--x", "1,0;0,1;-1,2", *args, "--h0", text(h0), "--c0", text(c0))
    _, ref = check_lstm(out)

    cell = torch.nn.LSTMCell(I, H, dtype=torch.float64)
    with torch.no_grad():  # torch stacks the gates in the order i, f, g, o; one bias is enough
        cell.weight_ih.copy_(torch.from_numpy(np.vstack([values[f"w_{g}"] for g in "ifgo"])))
        cell.weight_hh.copy_(torch.from_numpy(np.vstack([values[f"u_{g}"] for g in "ifgo"])))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate([values[f"b_{g}"] for g in "ifgo"])))
        cell.bias_hh.zero_()
        h, c = torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]
        for t, x in enumerate(np.array(out["inputs"]["x"]), 1):
            h, c = cell(torch.from_numpy(x)[None], (h, c))
            close(out["steps"][t - 1]["values"][f"h_{t}"], h[0].numpy())
            close(out["steps"][t - 1]["values"][f"c_{t}"], c[0].numpy())


def test_lstm_default_matches_torch_lstm_cell():
    out = explain_json("lstm")
    p = inputs_of(out)
    H, I = p["U_i"].shape[0], p["W_i"].shape[1]
    cell = torch.nn.LSTMCell(I, H, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(np.vstack([p[f"W_{g}"] for g in "ifgo"])))
        cell.weight_hh.copy_(torch.from_numpy(np.vstack([p[f"U_{g}"] for g in "ifgo"])))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate([p[f"b_{g}"] for g in "ifgo"])))
        cell.bias_hh.zero_()
        state = (torch.zeros(1, H, dtype=torch.float64), torch.zeros(1, H, dtype=torch.float64))
        for x in p["x"]:
            state = cell(torch.from_numpy(x)[None], state)
    close(out["outputs"]["h_3"], state[0][0].numpy())
    close(out["outputs"]["c_3"], state[1][0].numpy())


@pytest.mark.parametrize("default", [True, False])
def test_gru_matches_torch_gru_cell_with_copied_weights(default):
    if default:
        out = explain_json("gru")
    else:
        rng = np.random.default_rng(2)
        names = ["w_r", "u_r", "b_r", "w_z", "u_z", "b_z", "w_n", "u_n", "b_in", "b_hn"]
        _, args = random_gate_args(rng, names, 4, 2)
        out = explain_json("gru", "--x", "1,0;0,1;-1,2;0.5,0.5", *args,
                           "--h0", text(rng.normal(size=4)))
    p, _ = check_gru(out)
    H, I = p["U_r"].shape[0], p["W_r"].shape[1]
    cell = torch.nn.GRUCell(I, H, dtype=torch.float64)
    with torch.no_grad():  # torch stacks r, z, n; b_hn is the bias that r multiplies
        cell.weight_ih.copy_(torch.from_numpy(np.vstack([p["W_r"], p["W_z"], p["W_n"]])))
        cell.weight_hh.copy_(torch.from_numpy(np.vstack([p["U_r"], p["U_z"], p["U_n"]])))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate([p["b_r"], p["b_z"], p["b_in"]])))
        cell.bias_hh.copy_(torch.from_numpy(np.concatenate([np.zeros(2 * H), p["b_hn"]])))
        h = torch.from_numpy(p["h_0"])[None]
        for t, x in enumerate(p["x"], 1):
            h = cell(torch.from_numpy(x)[None], h)
            close(out["steps"][t - 1]["values"][f"h_{t}"], h[0].numpy())


# --- text output ----------------------------------------------------------------------------------

def test_text_output_reads_step_by_step_with_shapes_and_rounded_numbers():
    result = CliRunner().invoke(cli, ["explain", "rnn", "--x", "1,2,3", "--w-h", "0.5",
                                      "--w-x", "2", "--b", "1", "--activation", "relu"])
    assert result.exit_code == 0
    out = result.output
    order = ["h_t = relu(W_h·h_{t-1} + W_x·x_t + b)", "Inputs", "t = 1", "h_1 = relu(a)",
             "t = 2", "t = 3", "Outputs", "H = rows h_1 .. h_3  (3, 1)"]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions)
    assert "W_h  (1, 1)" in out and "[ 10.25 ]" in out


def test_text_output_rounds_to_four_significant_digits():
    out = explain.rnn(x="1", w_h="0", w_x="1", b="0", activation="tanh").to_text()
    assert f"{np.tanh(1.0):.4g}" in out and repr(np.tanh(1.0)) not in out


def test_gru_text_names_its_convention_and_attention_text_shows_every_head():
    gru_text = CliRunner().invoke(cli, ["explain", "gru"]).output
    assert "torch.nn.GRU" in gru_text and "r_t*(U_n·h_{t-1} + b_hn)" in gru_text
    att_text = CliRunner().invoke(cli, ["explain", "attention", "--causal"]).output
    for s in ("Head 1 of 2", "Head 2 of 2", "scaled_2 = scores_2 / sqrt(2)", "concat =",
              "output = concat·W_o"):
        assert s in att_text


# --- the library API ------------------------------------------------------------------------------

def test_parse_matrix_reads_rows_and_columns():
    close(explain.parse_matrix(" 1, 2 ; 3,4.5 ", "--m"), [[1, 2], [3, 4.5]])
    with pytest.raises(UserError, match="--m"):
        explain.parse_matrix("1,2;3", "--m")


def test_python_api_takes_arrays_and_gives_the_same_numbers_as_text():
    a = explain.attention(x=[[1, 0], [0, 1], [1, 1]], w_q=np.eye(2), w_k=np.eye(2),
                          w_v=[[1, 2], [3, 4]], heads=1).to_dict()
    b = explain.attention(x="1,0;0,1;1,1", w_q="1,0;0,1", w_k="1,0;0,1", w_v="1,2;3,4",
                          heads=1).to_dict()
    assert a == b


# --- bad input: one line on stderr, status 2, no traceback ----------------------------------------

@pytest.mark.parametrize("args, words", [
    (["rnn", "--x", "1,2;3"], ["--x", "same number"]),
    (["attention", "--w-v", "1,x;3,4"], ["--w-v", "'x' is not a number"]),
    (["rnn", "--x", "1,0;0,1", "--w-x", "1;2"], ["--w-x", "needs 2 rows x 2 columns"]),
    (["attention", "--heads", "3"], ["--heads 3", "choose --heads among 1, 2, 4"]),
    (["rnn", "--activation", "softplus"], ["softplus", "tanh"]),
    (["gru", "--b-hn", "1,2,3"], ["--b-hn", "needs 2 entries"]),
    (["attention", "--x", "1,0;0,1", "--w-o", "1,2"], ["--w-o", "needs 2 rows"]),
])
def test_bad_input_is_one_line_and_status_2(args, words):
    r = subprocess.run([sys.executable, "-m", "seqarena", "explain", *args],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip().count("\n") == 0
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr
