"""Machine-readable diagnostics: every documented code comes from a real spec, ``netspec
compile --json`` prints the records (file, line, column, node, code, message, hint) with exit
status 1, and docs/error_codes.md lists exactly the codes there are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.common.diagnostics import CODES, FALLBACK, classify, records, split_hint
from netspec.common.errors import Diagnostic, NetspecError
from netspec.plan.compiler import compile_plan

ROOT = Path(__file__).resolve().parents[1]

CHAIN = """\
[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 3

[nodes.flat]
op = "flatten"

[nodes.fc]
op = "linear"
out_features = 10
"""
BLOCK = """\
[blocks.unit]
args = ["planes"]

[blocks.unit.nodes.conv]
op = "conv2d"
out_channels = "= planes"
kernel_size = 3
padding = 1
"""

# (code, the spec's text, the line the problem is reported at)
CASES = [
    ("toml-syntax", "[nodes.a\nop = 1\n", 1),
    ("duplicate", CHAIN + "\n[nodes.conv]\nop = \"relu\"\n", 17),
    ("unknown-table", "[trian]\nepochs = 1\n" + CHAIN, 1),
    ("no-nodes", "[network]\nname = \"x\"\n", None),
    ("no-input-node", "[nodes.a]\nop = \"relu\"\ninputs = \"a\"\n", None),
    ("no-input-node", CHAIN + "\n[nodes.scale]\nop = \"parameter\"\nshape = [10]\n", 17),
    ("unknown-op", CHAIN.replace('op = "flatten"', 'op = "flaten"'), 11),
    ("missing-op", CHAIN.replace('op = "flatten"', 'kind = "flatten"'), 10),
    ("unknown-field", CHAIN.replace("kernel_size", "kernal_size"), 8),
    ("missing-field", CHAIN.replace("kernel_size = 3\n", ""), 5),
    ("wrong-type", CHAIN.replace("out_channels = 4", 'out_channels = "4"'), 7),
    ("out-of-range", CHAIN.replace("out_features = 10", "out_features = 0"), 15),
    ("unknown-input", CHAIN.replace('op = "flatten"', 'op = "flatten"\ninputs = "cnov"'), 12),
    ("input-count", CHAIN.replace('op = "flatten"', 'op = "flatten"\ninputs = ["conv", "image"]'),
     12),
    ("cycle", CHAIN.replace('op = "flatten"', 'op = "flatten"\ninputs = "fc"'), 12),
    ("shape-mismatch", CHAIN.replace('[nodes.flat]\nop = "flatten"\n', ""), 11),
    ("weights", CHAIN.replace("kernel_size = 3", "kernel_size = 3\nweight_file = \"no.npy\""),
     9),
    ("unknown-block", BLOCK + CHAIN + "\n[nodes.more]\nblock = \"unti\"\nplanes = 2\n", 26),
    ("block-argument", BLOCK + CHAIN + "\n[nodes.more]\nblock = \"unit\"\nplane = 2\n", 27),
    ("block-definition", BLOCK.replace('args = ["planes"]', 'arg = ["planes"]') + CHAIN, 2),
    ("expression", BLOCK + CHAIN + "\n[nodes.more]\nblock = \"unit\"\nplanes = \"= 2 +\"\n",
     27),
    ("variable", "[vars]\n\"two words\" = 2\n" + CHAIN, 2),
    ("include", "include = [\"missing.toml\"]\n" + CHAIN, 1),
    ("assertion", "[vars]\nw = 3\n[assert]\nodd = { check = \"= w % 2 == 0\", message = "
                  "\"an even width\" }\n" + CHAIN, 4),
]


def diagnostics_of(text: str, tmp_path: Path) -> list[Diagnostic]:
    path = tmp_path / "net.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NetspecError) as caught:
        compile_plan(path)
    return caught.value.diagnostics


@pytest.mark.parametrize("code, text, line", CASES, ids=[case[0] for case in CASES])
def test_each_code_comes_from_its_kind_of_mistake(tmp_path, code, text, line):
    found = diagnostics_of(text, tmp_path)
    kinds = [d.kind for d in found]
    assert code in kinds, [str(d) for d in found]
    if line is not None:
        assert any(d.kind == code and d.line == line for d in found), [str(d) for d in found]


def test_every_documented_code_is_produced_by_a_case():
    produced = {case[0] for case in CASES}
    documented = {code.name for code in CODES}
    # file errors come from the command line, train errors from [train] (tested below), the
    # branch warning from a spec that compiles (tests/test_blocks_zoo.py)
    assert documented - produced == {"file", "train", "too-large", "branch-rewired", FALLBACK}


def test_train_problems_and_missing_files_have_their_codes(tmp_path, capsys):
    from netspec.train.config import parse_train_config

    with pytest.raises(NetspecError) as caught:
        parse_train_config({"epochs": 0}, file="x.toml", locate=lambda _: 3)
    assert [d.kind for d in caught.value.diagnostics] == ["train"]
    assert main(["compile", str(tmp_path / "nothing.toml"), "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert [e["code"] for e in errors] == ["file"]


def test_compile_json_prints_the_records_with_exit_status_1(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = CHAIN.replace("kernel_size", "kernal_size").replace(
        '[nodes.flat]\nop = "flatten"\n', "")
    Path("bad.toml").write_text(text, encoding="utf-8")
    assert main(["compile", "bad.toml", "--json"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("netspec compile: ") and "kernal_size" in err
    errors = json.loads(out)["errors"]
    assert errors[0] == {
        "file": "bad.toml", "line": 8, "column": 1, "node": "conv", "op": "conv2d",
        "context": None, "code": "unknown-field", "message": "unknown field 'kernal_size'",
        "hint": "did you mean 'kernel_size'?",
        "text": "bad.toml:8: node 'conv' (conv2d): unknown field 'kernal_size'; did you mean "
                "'kernel_size'?"}
    assert set(errors[0]) == {"file", "line", "column", "node", "op", "context", "code",
                              "message", "hint", "text"}


def test_records_carry_the_column_where_the_line_starts():
    text = "[nodes]\n  conv = { op = 'x' }\n"
    record = records([Diagnostic("unknown op 'x'", file="a.toml", line=2)], {"a.toml": text})
    assert record[0]["column"] == 3 and record[0]["code"] == "unknown-op"


def test_the_hint_is_what_follows_the_first_semicolon():
    assert split_hint("a; b; c") == ("a", "b; c")
    assert split_hint("nothing to do") == ("nothing to do", None)


def test_an_explicit_code_wins_and_unknown_wording_falls_back():
    assert Diagnostic("anything", code="cycle").kind == "cycle"
    assert classify("a problem never seen before") == FALLBACK


def test_the_documentation_lists_every_code():
    page = (ROOT / "docs" / "error_codes.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z-]+)` \|", page, flags=re.MULTILINE)
    assert listed == [code.name for code in CODES]
