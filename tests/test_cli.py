"""The command line, through a subprocess (``python -m attndsl``) as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import located_error

import attndsl
from attndsl import cli
from attndsl.inputs import random_inputs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MISTRAL = EXAMPLES / "mistral_block.yaml"
GPT2 = EXAMPLES / "gpt2_causal.attn"
BERT = EXAMPLES / "bert_encoder.yaml"
COMMANDS = ("compile", "check", "run", "ir", "convert", "viz")

BAD_YAML = """\
attndsl: 1
dims: {batch: dynamic, seq: dynamic, d_model: 64}
inputs:
  x: [batch, seq, d_model]
blocks:
  attn:
    query: x
    heads: 4
    mask: causal & slidng(8)
outputs:
  y: attn
"""

TWO_ERRORS_ATTN = """\
attndsl 1
dims batch = dynamic, seq = dynamic, d_model = 64
input x: [batch, seq, d_model]
block attn = attention(query = xx) {
  heads 3, kv_heads 2
}
output y = attn
"""


def attndsl_cli(*args: object, env: dict | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "ATTNDSL_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "attndsl", *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


def assert_clean_error(r: subprocess.CompletedProcess, code: int = 2) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- help, version, usage


def test_version():
    r = attndsl_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"attndsl {attndsl.__version__}"


def test_console_script():
    script = Path(sys.executable).with_name("attndsl")
    if not script.exists():
        pytest.skip("attndsl is not installed as a script next to this Python")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"attndsl {attndsl.__version__}")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command):
    r = attndsl_cli(*([command] if command else []), "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: attndsl{' ' + command if command else ''}")
    if command is None:
        for c in COMMANDS:
            assert c in r.stdout


def test_usage_errors_exit_2():
    assert_clean_error(attndsl_cli())
    r = attndsl_cli("compile", MISTRAL)  # -o missing
    assert_clean_error(r)
    assert "-o/--output" in r.stderr
    r = attndsl_cli("compile", MISTRAL, "-o", "x.onnx", "--opset", "16")
    assert_clean_error(r)
    assert "invalid choice" in r.stderr
    assert_clean_error(attndsl_cli("check", MISTRAL, "--sizes", "seq"))
    assert_clean_error(attndsl_cli("check", MISTRAL, "--len", "8", "--sizes", "seq=8"))


# ---------------------------------------------------------------- spec errors


def test_spec_error_has_location_caret_and_hint(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_YAML)
    for command in (("check",), ("ir",), ("compile", "-o", tmp_path / "x.onnx"), ("run",)):
        r = attndsl_cli(command[0], spec, *command[1:])
        assert_clean_error(r)
        assert r.stderr.splitlines()[:3] == located_error(
            spec, 9, 20, "unknown mask primitive 'slidng'; did you mean 'sliding'?",
            "    mask: causal & slidng(8)", len("slidng(8)")).splitlines()
        assert r.stdout == ""


def test_all_spec_errors_are_printed(tmp_path):
    spec = tmp_path / "two.attn"
    spec.write_text(TWO_ERRORS_ATTN)
    r = attndsl_cli("check", spec)
    assert_clean_error(r)
    locations = [line.split(": error:")[0] for line in r.stderr.splitlines() if ": error:" in line]
    assert locations == [f"{spec}:4:32", f"{spec}:5:21"]
    assert "unknown stream 'xx'" in r.stderr
    assert "kv_heads 2 does not divide heads 3" in r.stderr


def test_missing_file_is_a_clean_error(tmp_path):
    for command in ("check", "ir", "run"):
        r = attndsl_cli(command, tmp_path / "nope.yaml")
        assert_clean_error(r)
        assert r.stderr.strip() == f"error: cannot read '{tmp_path / 'nope.yaml'}': no such file"


def test_internal_error_exit_1_with_report_hint(monkeypatch, capsys):
    def boom(path):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("attndsl.api.load_spec", boom)
    monkeypatch.delenv("ATTNDSL_DEBUG", raising=False)
    assert cli.main(["ir", str(MISTRAL)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["internal error: ZeroDivisionError: division by zero",
                                cli.ISSUES]
    monkeypatch.setenv("ATTNDSL_DEBUG", "1")
    assert cli.main(["ir", str(MISTRAL)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in boom" in err
    assert err.splitlines()[-1] == cli.ISSUES


def test_keyboard_interrupt_exit_130(monkeypatch, capsys):
    def stop(path):
        raise KeyboardInterrupt

    monkeypatch.setattr("attndsl.api.load_spec", stop)
    assert cli.main(["check", str(MISTRAL)]) == 130
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- ir, check, convert


def test_ir_prints_the_ir():
    r = attndsl_cli("ir", GPT2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == attndsl.print_ir(attndsl.load_spec(GPT2))


def test_check_summary():
    r = attndsl_cli("check", GPT2, "--len", "64")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "model gpt2_causal: float32, 1 block(s), 148,224 parameters" in out
    assert "sizes: batch=1, seq=64, d_model=192" in out
    assert "x            input [batch, seq, d_model] = [1, 64, 192]" in out
    assert "heads 12, kv_heads 12, head_dim 16" in out
    assert "mask   causal" in out
    # causal at 64: 64*65/2 cells per head, 12 heads; one partial 64x64 tile per head
    assert "density 50.78% (24,960 of 49,152 cells, q_len 64, k_len 64)" in out
    assert "tiles 64x64: 0 full, 12 partial, 0 empty ((head, tile) pairs)" in out
    assert "FLOPs  18.87 M projections + 1.60 M attention" in out


def test_check_input_dependent_mask_says_so():
    r = attndsl_cli("check", BERT, "--sizes", "seq=100")
    assert r.returncode == 0, r.stderr
    assert "depends on inputs lengths: random example values, seed 0" in r.stdout


def test_check_unknown_size_name():
    r = attndsl_cli("check", MISTRAL, "--sizes", "sq=12")
    assert_clean_error(r)
    assert r.stderr.strip() == "error: unknown dim 'sq' in --sizes; did you mean 'seq'?"


@pytest.mark.parametrize("src, dst", [("mistral_block.yaml", "m.attn"),
                                      ("mistral_block.attn", "m.yaml")])
def test_convert_round_trip(tmp_path, src, dst):
    r = attndsl_cli("convert", EXAMPLES / src, "-o", tmp_path / dst)
    assert r.returncode == 0, r.stderr
    assert attndsl.load_spec(tmp_path / dst) == attndsl.load_spec(EXAMPLES / src)


def test_convert_unknown_extension(tmp_path):
    r = attndsl_cli("convert", MISTRAL, "-o", tmp_path / "m.txt")
    assert_clean_error(r)
    assert "cannot tell the syntax" in r.stderr


# ---------------------------------------------------------------- compile


def test_compile_writes_a_checked_model(tmp_path):
    out = tmp_path / "m.onnx"
    r = attndsl_cli("compile", MISTRAL, "-o", out, "--opset", "17")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out}: model mistral_block, 1 block(s)")
    assert len(r.stdout.splitlines()) == 1
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["attndsl.spec"] == MISTRAL.read_text()


def test_compile_with_weights_file(tmp_path):
    model = attndsl.load_spec(BERT)
    rng = np.random.default_rng(3)
    weights = {n: rng.standard_normal(s).astype(np.float32)
               for n, s in model.weight_shapes().items()}
    np.savez(tmp_path / "w.npz", **weights)
    out = tmp_path / "m.onnx"
    r = attndsl_cli("compile", BERT, "-o", out, "--weights", tmp_path / "w.npz", "--no-opt")
    assert r.returncode == 0, r.stderr
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    for name, value in weights.items():
        np.testing.assert_array_equal(inits[name], value)
    # optimized (the default): the file holds the weights of the optimized IR
    r = attndsl_cli("compile", BERT, "-o", out, "--weights", tmp_path / "w.npz")
    assert r.returncode == 0, r.stderr
    assert "attn.qkv_proj.weight" in {t.name for t in onnx.load(out).graph.initializer}


def test_compile_passes_and_ir_after(tmp_path):
    out = tmp_path / "m.onnx"
    assert attndsl_cli("compile", GPT2, "-o", out, "--passes", "fuse-qkv").returncode == 0
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["attndsl.passes"] == "fuse-qkv"
    assert attndsl_cli("run", out, "--verify").returncode == 0
    r = attndsl_cli("compile", GPT2, "-o", out, "--passes", "fuse-qvk")
    assert r.returncode == 2 and "did you mean 'fuse-qkv'" in r.stderr
    r = attndsl_cli("ir", GPT2, "--after", "fuse-qkv")
    assert r.returncode == 0 and "fused qkv projection" in r.stdout
    r = attndsl_cli("ir", GPT2, "--after", "share-computations")
    assert r.returncode == 0 and "MatMul" in r.stdout


def test_failed_compile_leaves_output_untouched(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    assert_clean_error(attndsl_cli("compile", bad, "-o", out))
    np.savez(tmp_path / "w.npz", nothing=np.zeros(3, np.float32))
    r = attndsl_cli("compile", BERT, "-o", out, "--weights", tmp_path / "w.npz")
    assert_clean_error(r)
    assert "missing array 'attn.q_proj.weight'" in r.stderr
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "m.onnx", "w.npz"]


def test_unwritable_output_is_a_clean_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    r = attndsl_cli("compile", GPT2, "-o", missing / "m.onnx")
    assert_clean_error(r)
    want = f"error: cannot write '{missing / 'm.onnx'}': No such file or directory"
    assert r.stderr.strip() == want
    r = attndsl_cli("run", GPT2, "--output", missing / "out.npz")
    assert_clean_error(r)
    assert f"error: cannot write '{missing / 'out.npz'}'" in r.stderr


# ---------------------------------------------------------------- run


def test_run_verify_spec_and_write_outputs(tmp_path):
    out = tmp_path / "out.npz"
    r = attndsl_cli("run", MISTRAL, "--verify", "--sizes", "seq=9,batch=2", "--past-len", "3",
                    "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "y: float32[2, 9, 128]" in r.stdout
    assert "attn.present_key: float32[2, 2, 12, 16]" in r.stdout
    assert "max abs error" in r.stdout and "FAIL" not in r.stdout
    with np.load(out) as f:
        assert sorted(f.files) == ["attn.present_key", "attn.present_value", "y"]
        assert f["y"].shape == (2, 9, 128)


def test_run_verify_float16(tmp_path):
    spec = tmp_path / "gpt2_fp16.yaml"
    spec.write_text((EXAMPLES / "gpt2_causal.yaml").read_text().replace(
        "name: gpt2_causal\n", "name: gpt2_causal\ndtype: float16\n"))
    r = attndsl_cli("run", spec, "--verify", "--sizes", "seq=33")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "y: float16[2, 33, 192]" in r.stdout
    assert "tolerance 0.02 max abs error" in r.stdout


def test_run_given_inputs_matches_in_process_reference(tmp_path):
    model = attndsl.load_spec(BERT)
    inputs = random_inputs(model, {"batch": 3, "seq": 5}, seed=11)
    np.savez(tmp_path / "in.npz", **inputs)
    r = attndsl_cli("run", BERT, "--inputs", tmp_path / "in.npz", "--output",
                    tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    from attndsl.reference import run_reference
    from attndsl.weights import load_weights

    want = run_reference(model, load_weights(model), inputs)["y"]
    with np.load(tmp_path / "out.npz") as f:
        np.testing.assert_allclose(f["y"], want, atol=1e-4)


def test_run_inputs_that_do_not_match(tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 128), np.float32), extra=np.zeros(1))
    r = attndsl_cli("run", BERT, "--inputs", tmp_path / "in.npz")
    assert_clean_error(r)
    assert "missing lengths; unexpected extra" in r.stderr
    r = attndsl_cli("run", BERT, "--inputs", tmp_path / "missing.npz")
    assert_clean_error(r)
    assert "no such file" in r.stderr


def test_run_compiled_model_verifies_and_detects_mismatch(tmp_path):
    out = tmp_path / "gpt2.onnx"
    assert attndsl_cli("compile", GPT2, "-o", out).returncode == 0
    r = attndsl_cli("run", out, "--verify", "--seed", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "probs: float32[2, 12, 7, 7]" in r.stdout
    # A model whose embedded spec says something else than its graph fails --verify.
    proto = onnx.load(out)
    for p in proto.metadata_props:
        if p.key == "attndsl.spec":
            p.value = p.value.replace("mask causal", "mask all")
    onnx.save(proto, tmp_path / "lying.onnx")
    r = attndsl_cli("run", tmp_path / "lying.onnx", "--verify")
    assert r.returncode == 1
    assert "probs: max abs error" in r.stdout and "FAIL" in r.stdout
    assert r.stderr.startswith("verify failed for ") and "probs" in r.stderr


def test_run_onnx_not_from_attndsl(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["a"], ["b"])], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])])
    proto = onnx.helper.make_model(graph)
    onnx.save(proto, tmp_path / "other.onnx")
    r = attndsl_cli("run", tmp_path / "other.onnx")
    assert_clean_error(r)
    assert "not produced by attndsl" in r.stderr
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    r = attndsl_cli("run", tmp_path / "junk.onnx")
    assert_clean_error(r)
    assert "cannot read" in r.stderr


def _has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_has_cuda(), reason="this onnxruntime has CUDA")
def test_run_provider_cuda_without_cuda_is_a_clear_error():
    r = attndsl_cli("run", GPT2, "--provider", "cuda")
    assert_clean_error(r)
    assert "CUDA" in r.stderr
    assert r.stdout == ""


@pytest.mark.skipif(_has_cuda(), reason="this onnxruntime has CUDA")
def test_run_provider_auto_falls_back_to_cpu():
    r = attndsl_cli("run", GPT2, "--provider", "auto", "--verify")
    assert r.returncode == 0, r.stderr
    assert "CPU" in r.stderr and "CUDA" in r.stderr
    assert "CPUExecutionProvider" in r.stdout


# ---------------------------------------------------------------- viz


def test_viz_text_and_png(tmp_path):
    r = attndsl_cli("viz", GPT2, "--len", "8", "--heads", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gpt2_causal, block attn: causal\n")
    assert "head 0" in r.stdout and "heads 0-" not in r.stdout
    png = tmp_path / "mask.png"
    r = attndsl_cli("viz", EXAMPLES / "gemma2_local_global.attn", "--block", "local", "--len",
                    "32", "--tiles", "--tile-size", "8", "-o", png)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_viz_probabilities_of_a_run(tmp_path):
    model = attndsl.load_spec(GPT2)
    np.savez(tmp_path / "in.npz", **random_inputs(model, {"batch": 1, "seq": 6}))
    r = attndsl_cli("viz", GPT2, "--inputs", tmp_path / "in.npz", "--heads", "1..2")
    assert r.returncode == 0, r.stderr
    assert "probabilities" in r.stdout and "q 0..5 x k 0..5" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--block", "atn"), "no block 'atn'"),
    (("--heads", "12"), "out of range"),
])
def test_viz_bad_selection(args, message):
    r = attndsl_cli("viz", GPT2, *args)
    assert_clean_error(r)
    assert message in r.stderr


def test_compile_explain_target_and_sparse_flags(tmp_path):
    out = tmp_path / "m.onnx"
    r = attndsl_cli("compile", EXAMPLES / "gemma2_local_global.yaml", "-o", out, "--explain")
    assert r.returncode == 0, r.stderr
    assert "local: portable/block-sparse" in r.stdout and "global: " in r.stdout
    r = attndsl_cli("compile", EXAMPLES / "gemma2_local_global.yaml", "-o", out, "--explain",
                    "--sparse", "dense")
    assert r.returncode == 0 and "local: portable/dense" in r.stdout, r.stdout + r.stderr
    r = attndsl_cli("compile", EXAMPLES / "mistral_block.yaml", "-o", out, "--target", "ort",
                    "--opset", "23", "--explain")
    assert r.returncode == 0, r.stderr  # the cost model's pick, with both estimates
    assert re.search(r"attn: .+ — (portable|ort) .+ \(est\. [0-9.e+-]+ ms\) over "
                     r"(portable|ort) .+ \(est\. [0-9.e+-]+ ms\)", r.stdout), r.stdout
    r = attndsl_cli("compile", EXAMPLES / "mistral_block.yaml", "-o", out, "--target", "ort",
                    "--opset", "23", "--explain", "--sparse", "dense")  # keeps the fused op
    assert r.returncode == 0, r.stderr
    assert "attn: com.microsoft.GroupQueryAttention" in r.stdout
    assert onnx.load(out).metadata_props  # written
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["attndsl.target"] == "ort" and meta["attndsl.opset"] == "23"


def test_portable_target_rejects_opset_23(tmp_path):
    out = tmp_path / "m.onnx"
    r = attndsl_cli("compile", EXAMPLES / "mistral_block.yaml", "-o", out, "--opset", "23")
    assert_clean_error(r)
    assert "unsupported ONNX opset 23 for the portable target" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("flags", [("--target", "ort", "--opset", "23"),
                                   ("--sparse", "block", "--block-size", "4")])
def test_run_verify_with_compile_flags(flags):
    r = attndsl_cli("run", EXAMPLES / "mistral_block.yaml", "--sizes", "seq=11",
                    "--past-len", "3", "--verify", *flags)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout and "error:" not in r.stderr
