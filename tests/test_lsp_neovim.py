"""``netspec lsp`` in a real editor: headless Neovim's own LSP client starts the server, shows
the compiler's diagnostic at its line, hovers a node's shape, completes ops, and clears the
diagnostic once the spec is fixed in the buffer, which is never written to disk. Skips where
Neovim is not installed (CI installs Debian's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
[network]
name = "bad"

[nodes]
image = { op = "input", shape = [1, 28, 28] }
conv = { op = "conv2d", out_channels = 6, kernel_size = 5 }
fc = { op = "linear", out_features = 10 }
"""

# start_client/buf_attach_client: the client API of every Neovim from 0.7 on (0.11's
# vim.lsp.config, which the README shows, is built on it)
SESSION = """\
local out = {}
local function say(s) table.insert(out, s) end
local id = vim.lsp.start_client({ name = "netspec", cmd = { PYTHON, "-m", "netspec", "lsp" },
                                 root_dir = vim.fn.getcwd() })
vim.cmd("edit net.toml")
vim.lsp.buf_attach_client(0, id)
vim.wait(30000, function() return #vim.diagnostic.get(0) > 0 end, 50)
for _, d in ipairs(vim.diagnostic.get(0)) do
  say(string.format("diagnostic %d: %s", d.lnum + 1, d.message))
end
local uri = vim.uri_from_bufnr(0)
local hover = vim.lsp.buf_request_sync(0, "textDocument/hover",
  { textDocument = { uri = uri }, position = { line = 5, character = 1 } }, 30000)
for _, r in pairs(hover or {}) do
  if r.result then say("hover: " .. r.result.contents.value:gsub("\\n", " ")) end
end
local done = vim.lsp.buf_request_sync(0, "textDocument/completion",
  { textDocument = { uri = uri }, position = { line = 6, character = 13 } }, 30000)
for _, r in pairs(done or {}) do
  if r.result then
    for _, item in ipairs(r.result.items or r.result) do say("completion: " .. item.label) end
  end
end
vim.api.nvim_buf_set_lines(0, 6, 6, false, { 'flat = { op = "flatten" }' })
vim.wait(30000, function() return #vim.diagnostic.get(0) == 0 end, 50)
say("after the fix: " .. #vim.diagnostic.get(0))
vim.fn.writefile(out, "result.txt")
vim.cmd("qa!")
"""


@pytest.mark.skipif(shutil.which("nvim") is None, reason="Neovim (nvim) is not installed")
def test_neovim_shows_the_servers_diagnostics_hover_and_completion(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text(SPEC, encoding="utf-8")
    script = tmp_path / "session.lua"
    script.write_text(f"local PYTHON = {sys.executable!r}\n" + SESSION, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path)}
    subprocess.run(["nvim", "--headless", "-u", "NONE", "-i", "NONE", "-c",
                    f"luafile {script}"], cwd=tmp_path, env=env, timeout=120,
                   capture_output=True, check=False)
    lines = (tmp_path / "result.txt").read_text(encoding="utf-8").splitlines()
    assert "diagnostic 7: node 'fc' (linear): input has shape (6, 24, 24), an image (C, H, " \
           "W); linear acts on the last axis only; add a flatten node before it (or a " \
           "permute that puts the channels last, to act on them)" in lines
    hover = next(line for line in lines if line.startswith("hover: "))
    assert "**conv** · `conv2d`" in hover and "output `(6, 24, 24)` per sample" in hover
    completions = {line.removeprefix("completion: ") for line in lines
                   if line.startswith("completion: ")}
    assert {"conv2d", "linear", "flatten", "batchnorm"} <= completions
    assert lines[-1] == "after the fix: 0"
    # the buffer was edited; the file was not
    assert spec.read_text(encoding="utf-8") == SPEC
