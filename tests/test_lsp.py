"""``netspec lsp`` end to end: a small JSON-RPC client starts the server as an editor does
(a subprocess on stdio) and checks diagnostics at the line of a shape error and none after the
fix, hover with output shapes, completion of ops, fields, node ids and blocks, and go to
definition. The functions under the protocol (netspec.editor.features) are tested directly too."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties import examples

from netspec.common.extras import install_line
from netspec.editor.features import analyse, complete, cursor_at, definition, hover

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0

SHAPE_ERROR = """\
[network]
name = "tiny"

[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.conv]
op = "conv2d"
out_channels = 4
kernel_size = 3

[nodes.fc]
op = "linear"
out_features = 10
"""
FIXED = SHAPE_ERROR.replace("[nodes.fc]", "[nodes.flat]\nop = \"flatten\"\n\n[nodes.fc]")

BLOCKS = """\
include = ["lib.toml"]

[nodes.image]
op = "input"
shape = [1, 8, 8]

[nodes.stage]
block = "unit"
planes = 4

[nodes.head]
op = "flatten"
inputs = "stage"
"""
LIBRARY = """\
[blocks.unit]
args = ["planes"]

[blocks.unit.nodes.conv]
op = "conv2d"
out_channels = "= planes"
kernel_size = 3
padding = 1

[blocks.unit.nodes.act]
op = "relu"
"""


def line_of(text: str, needle: str) -> int:
    """0-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines()) if needle in line)


class Client:
    """Just enough of an LSP client: framed JSON-RPC over the server's stdio."""

    def __init__(self, cwd: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "netspec", "lsp"], cwd=cwd,
                                        env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.pending: list[dict[str, Any]] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while True:
                header = stream.readline()
                if not header:
                    return
                if header in (b"\r\n", b"\n"):
                    break
                name, _, value = header.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(stream.read(length)))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def request(self, method: str, params: Any) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        reply = self._wait(lambda m: m.get("id") == self.next_id and "method" not in m)
        assert "error" not in reply, reply
        return reply.get("result")

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        message = self._wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                             and m["params"]["uri"] == uri)
        return message["params"]["diagnostics"]

    def _wait(self, wanted) -> dict[str, Any]:
        for index, message in enumerate(self.pending):
            if wanted(message):
                return self.pending.pop(index)
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                stderr = self.process.stderr.read1(100_000).decode(errors="replace") \
                    if self.process.poll() is not None else ""
                raise AssertionError(f"no answer from the server in {TIMEOUT}s {stderr}") from None
            if message.get("method") == "window/logMessage":
                continue
            if wanted(message):
                return message
            self.pending.append(message)

    def close(self) -> None:
        try:
            self.request("shutdown", None)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def client(tmp_path):
    pytest.importorskip("pygls")
    client = Client(tmp_path)
    client.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(),
                                  "capabilities": {}})
    client.notify("initialized", {})
    yield client
    client.close()


def open_document(client: Client, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "toml", "version": 1, "text": text}})
    return uri


def test_a_session_shows_errors_shapes_completions_and_definitions(client, tmp_path):
    path = tmp_path / "tiny.toml"  # never written: the server compiles the buffer
    uri = open_document(client, path, SHAPE_ERROR)
    diagnostics = client.diagnostics(uri)
    assert len(diagnostics) == 1
    problem = diagnostics[0]
    assert problem["range"]["start"]["line"] == line_of(SHAPE_ERROR, "[nodes.fc]")
    assert problem["code"] == "shape-mismatch"
    assert "add a flatten node" in problem["message"]  # the hint stays in the message
    assert problem["data"]["hint"] and problem["data"]["node"] == "fc"

    hover_at = {"textDocument": {"uri": uri},
                "position": {"line": line_of(SHAPE_ERROR, "[nodes.conv]"), "character": 8}}
    shown = client.request("textDocument/hover", hover_at)["contents"]["value"]
    assert "(4, 6, 6)" in shown and "conv2d" in shown and "40 trainable" in shown

    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": FIXED}]})
    assert client.diagnostics(uri) == []
    assert not path.exists()

    line = line_of(FIXED, 'op = "flatten"')
    items = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": 6}})["items"]
    assert {"conv2d", "linear", "relu", "flatten"} <= {item["label"] for item in items}

    fc_line = line_of(FIXED, "[nodes.fc]")
    items = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": fc_line + 3, "character": 0}})
    labels = {item["label"]: item for item in items["items"]}
    assert "bias" in labels and labels["bias"]["insertText"] == "bias = true"
    assert "out_features" not in labels  # already written

    changed = FIXED.replace('[nodes.fc]\nop = "linear"',
                            '[nodes.fc]\nop = "linear"\ninputs = "flat"')
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": changed}]})
    assert client.diagnostics(uri) == []
    inputs_line = line_of(changed, 'inputs = "flat"')
    found = client.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": {"line": inputs_line, "character": 11}})
    assert found["uri"] == uri
    assert found["range"]["start"]["line"] == line_of(changed, "[nodes.flat]")
    items = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": inputs_line, "character": 10}})
    assert {"image", "conv", "flat"} <= {item["label"] for item in items["items"]}


def test_blocks_from_an_include_hover_complete_and_jump(client, tmp_path):
    (tmp_path / "lib.toml").write_text(LIBRARY, encoding="utf-8")
    uri = open_document(client, tmp_path / "net.toml", BLOCKS)
    assert client.diagnostics(uri) == []
    stage = line_of(BLOCKS, "[nodes.stage]")
    shown = client.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": {"line": stage, "character": 8}})
    text = shown["contents"]["value"]
    assert "unit" in text and "(4, 8, 8)" in text and "40 trainable" in text
    block_line = line_of(BLOCKS, 'block = "unit"')
    found = client.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": {"line": block_line, "character": 11}})
    assert found["uri"] == (tmp_path / "lib.toml").as_uri()
    assert found["range"]["start"]["line"] == line_of(LIBRARY, "[blocks.unit]")
    items = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": block_line, "character": 9}})
    assert [item["label"] for item in items["items"]] == ["unit"]


def test_an_error_in_an_included_file_is_shown_at_the_include_line(client, tmp_path):
    (tmp_path / "lib.toml").write_text(LIBRARY.replace("kernel_size", "kernal_size"),
                                       encoding="utf-8")
    uri = open_document(client, tmp_path / "net.toml", BLOCKS)
    diagnostics = client.diagnostics(uri)
    assert diagnostics and all(d["range"]["start"]["line"] == 0 for d in diagnostics)
    assert any("lib.toml:7" in d["message"] and "kernal_size" in d["message"]
               for d in diagnostics)


def test_broken_toml_is_reported_not_fatal(client, tmp_path):
    uri = open_document(client, tmp_path / "x.toml", "[nodes.a\nop = 1\n")
    diagnostics = client.diagnostics(uri)
    assert diagnostics[0]["code"] == "toml-syntax"
    assert diagnostics[0]["range"]["start"]["line"] == 0


# -- the functions under the protocol -----------------------------------------------------


def test_hover_and_definition_follow_inputs_entries(tmp_path):
    analysis = analyse(FIXED, tmp_path / "tiny.toml")
    line = line_of(FIXED, "[nodes.conv]")
    assert "(4, 6, 6)" in hover(analysis, line, 3)
    assert hover(analysis, line_of(FIXED, "[network]"), 2) is None
    assert definition(analysis, line, 3) is None


def test_inline_tables_and_dotted_keys_name_their_node():
    text = '[nodes]\nconv1 = { op = "conv2d", kernel_size = 3 }\nfc.op = "linear"\n'
    assert cursor_at(text, 1, 2).table == ("nodes", "conv1")
    inside = cursor_at(text, 1, text.splitlines()[1].index("kernel") + 2)
    assert inside.table == ("nodes", "conv1") and not inside.in_value
    op_value = cursor_at(text, 1, text.splitlines()[1].index('"conv2d"') + 2)
    assert op_value.key == "op" and op_value.in_value and op_value.word == "conv2d"
    assert cursor_at(text, 2, 9).table == ("nodes", "fc")


def test_completion_offers_block_arguments_with_defaults(tmp_path):
    (tmp_path / "lib.toml").write_text(LIBRARY.replace('args = ["planes"]',
                                                       'args = ["planes"]\n'
                                                       'defaults = { stride = 1 }'),
                                       encoding="utf-8")
    text = BLOCKS.replace("planes = 4\n", "planes = 4\n\n")
    analysis = analyse(text, tmp_path / "net.toml")
    line = line_of(text, "planes = 4") + 1
    items = {item.label: item for item in complete(analysis, line, 0)}
    assert items["stride"].insert == "stride = 1"
    assert "planes" not in items and "repeat" in items


# tokens of any rank, a learned tensor, attention, quoted dotted keys (torchvision's names)
TOKENS = """\
[nodes.image]
op = "input"
shape = [3, 8, 8]

[nodes]
"conv_proj" = { op = "conv2d", out_channels = 16, kernel_size = 4, stride = 4 }
grid = { op = "reshape", shape = [16, -1] }
patches = { op = "permute", dims = [0, 2, 1] }
class_token = { op = "parameter", shape = [1, 1, 16], batch_axis = true }
tokens = { op = "concat", inputs = ["class_token", "patches"], dim = 1 }
"encoder.ln" = { op = "layernorm", normalized_shape = 16 }
"encoder.attn" = { op = "multihead_attention", embed_dim = 16, num_heads = 4, causal = true }
first = { op = "select", dim = 1, index = 0 }
"heads.head" = { op = "linear", out_features = 10 }
"""


def test_hover_shows_token_shapes_under_quoted_dotted_keys():
    """torchvision's module names are quoted keys with dots ("heads.head"): the hover names
    the node, with its tensor shapes of any rank."""
    analysis = analyse(TOKENS, Path("/nonexistent-dir/vit.toml"))
    assert not analysis.diagnostics, analysis.diagnostics
    attn = hover(analysis, line_of(TOKENS, '"encoder.attn"'), 3)
    assert attn.startswith("**encoder.attn** · `multihead_attention`")
    assert "output `(5, 16)` per sample" in attn and "`in_proj_weight` (48, 16)" in attn
    head = hover(analysis, line_of(TOKENS, '"heads.head"'), 1)
    assert "**heads.head** · `linear`" in head and "inputs: `first` (16,)" in head
    token = hover(analysis, line_of(TOKENS, "class_token ="), 2)
    assert "output `(1, 16)` per sample" in token and "`class_token` (1, 1, 16)" in token
    assert "`patches` (4, 16)" in hover(analysis, line_of(TOKENS, "tokens ="), 2)


def test_hover_on_the_shipped_transformers_shows_their_shapes():
    vit = ROOT / "netspec" / "architectures" / "vit_b_16.toml"
    text = vit.read_text(encoding="utf-8")
    analysis = analyse(text, vit)
    # the stem is an instance named "": its nodes keep their own names
    stem = hover(analysis, line_of(text, "stem = {"), 1)
    assert "**stem** · block `patch_embedding`" in stem
    assert "output `(197, 768)` (node `tokens`)" in stem and "591,360 trainable" in stem
    encoder = hover(analysis, line_of(text, "encoder = {"), 1)
    assert "output `(197, 768)` (node `encoder.ln`)" in encoder
    assert "85,207,296 trainable parameters" in encoder
    assert "**heads.head** · `linear`" in hover(analysis, line_of(text, '"heads.head"'), 2)
    convnext = ROOT / "netspec" / "architectures" / "convnext_tiny.toml"
    text = convnext.read_text(encoding="utf-8")
    analysis = analyse(text, convnext)
    stage = hover(analysis, line_of(text, '"features.1" = {'), 2)
    assert stage.startswith("**features.1** · block `cnblock ×3`")
    assert "output `(96, 56, 56)`" in stage


def test_hover_on_an_instance_inside_a_block_lists_what_it_made():
    densenet = ROOT / "netspec" / "architectures" / "densenet121.toml"
    text = densenet.read_text(encoding="utf-8")
    analysis = analyse(text, densenet)
    shown = hover(analysis, line_of(text, 'transition = { block = "transition"'), 2)
    assert shown.startswith("**transition** in block `stage`, 3 instance(s)")
    assert "- `features.transition1` (block `transition`) → `(128, 28, 28)`, 4 nodes" in shown


def test_op_summaries_read_as_one_line_of_prose():
    """An op's docstring wraps over indented lines: completions and the schema show it with
    single spaces."""
    from netspec.editor.schema import spec_schema

    items = {item.label: item for item in complete(analyse('[nodes.x]\nop = "\n', Path(
        "/nonexistent-dir/net.toml")), 1, 6) if item.kind == "op"}
    assert "multihead_attention" in items and "parameter" in items
    definitions = spec_schema()["definitions"]
    for name, item in items.items():
        assert "  " not in item.detail, (name, item.detail)
        assert "  " not in definitions[f"op.{name}"]["description"], name


@examples(150)
@given(st.sampled_from([SHAPE_ERROR, FIXED, BLOCKS, TOKENS]), st.data())
def test_any_buffer_and_cursor_gets_an_answer_not_an_exception(text, data):
    """A buffer being typed is anything: cut, with stray characters, the cursor anywhere."""
    cut = data.draw(st.integers(0, len(text)))
    noise = data.draw(st.text(alphabet='[]{}="\'.,=# \nabcop_0123', max_size=12))
    buffer = text[:cut] + noise + text[cut:]
    analysis = analyse(buffer, Path("/nonexistent-dir/spec.toml"))
    assert all(d.line is None or d.line >= 1 for d in analysis.diagnostics)
    lines = buffer.splitlines() or [""]
    line = data.draw(st.integers(0, len(lines)))
    character = data.draw(st.integers(0, len(lines[min(line, len(lines) - 1)]) + 2))
    hover(analysis, line, character)
    complete(analysis, line, character)
    definition(analysis, line, character)


def test_without_pygls_the_command_says_what_to_install(monkeypatch, capsys):
    from netspec.cli import main

    for name in ("pygls", "pygls.lsp.server", "lsprotocol", "lsprotocol.types"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "netspec.editor.lsp", raising=False)
    assert main(["lsp", "--stdio"]) == 1
    assert install_line("lsp") in capsys.readouterr().err


ZOO = """\
[vars]
widths = [4, 8]

[assert]
few = { check = "= len(widths) <= 4", message = "at most four stages" }

[blocks.basic]
args = ["planes"]
defaults = { stride = 1 }
let = { project = "= stride != 1 or channels(x) != planes" }

[blocks.basic.assert]
narrow = { check = "= planes <= 4", message = "narrow blocks only" }

[blocks.basic.nodes]
conv = { op = "conv2d", out_channels = "= planes", kernel_size = 1, stride = "= stride" }

[nodes]
image = { op = "input", shape = [3, 8, 8] }
one = { block = "basic", planes = 4 }
two = { block = "basic", planes = "= widths[1]" }
"""


def test_completion_in_an_expression_offers_shape_functions_and_local_values(tmp_path):
    analysis = analyse(ZOO, tmp_path / "net.toml")
    line = line_of(ZOO, "out_channels")
    column = ZOO.splitlines()[line].index('"= planes"') + 3
    items = {item.label: item for item in complete(analysis, line, column)}
    assert {"shape", "channels", "height", "width"} <= set(items)
    assert items["channels"].insert == "channels(" and items["channels"].kind == "function"
    assert items["project"].kind == "local" and "project" in items
    assert {"planes", "stride", "x", "index", "widths", "max"} <= set(items)
    # outside an expression, a value is not completed with them
    column = ZOO.splitlines()[line].index("kernel_size = 1") + len("kernel_size = ")
    assert "channels" not in {item.label for item in complete(analysis, line, column)}


def test_hover_on_an_assertion_shows_its_check_message_and_where_it_fails(tmp_path):
    analysis = analyse(ZOO, tmp_path / "net.toml")
    narrow = hover(analysis, line_of(ZOO, "narrow ="), 1)
    assert "**assertion narrow** on each instance of block `basic`" in narrow
    assert "`= planes <= 4`" in narrow and "narrow blocks only" in narrow
    assert narrow.endswith("fails in `two`")
    few = hover(analysis, line_of(ZOO, "few ="), 1)
    assert "on the variables" in few and few.endswith("holds")
