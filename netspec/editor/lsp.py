"""``netspec lsp``: a language server (stdio) over :mod:`netspec.editor.features`, built on pygls.

On open and on every change the buffer is compiled (never written to disk) and every problem
is published at its line; hover, completion and go-to-definition read the last compile.
Problems found in an included file are shown at the ``include`` line of the spec, naming the
file and line they are about.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from netspec.common.errors import Diagnostic
from netspec.common.version import __version__
from netspec.editor.features import Analysis, analyse, complete, definition, hover

SOURCE = "netspec"
_KINDS = {"op": types.CompletionItemKind.Class, "field": types.CompletionItemKind.Field,
          "node": types.CompletionItemKind.Reference, "block": types.CompletionItemKind.Module,
          "argument": types.CompletionItemKind.Variable,
          "function": types.CompletionItemKind.Function,
          "variable": types.CompletionItemKind.Variable,
          "local": types.CompletionItemKind.Variable}


def document_path(uri: str) -> Path:
    """The file a document URI names (an unsaved buffer: a path in the working directory)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path.cwd() / (Path(unquote(parsed.path)).name or "untitled.toml")


def lsp_diagnostic(diagnostic: Diagnostic, analysis: Analysis,
                   severity: types.DiagnosticSeverity = types.DiagnosticSeverity.Error
                   ) -> types.Diagnostic:
    """One problem as the protocol shows it: at its line (0-based), from its column to the end
    of the line, the hint kept in the message. A problem in another file (an include) is put
    at the spec's include line and names where it is."""
    lines = analysis.text.splitlines() or [""]
    own_file = diagnostic.file in (None, analysis.path.name)
    line = (diagnostic.line or 1) - 1 if own_file else _include_line(analysis)
    line = min(max(line, 0), len(lines) - 1)
    text = lines[line]
    start = (diagnostic.column or 1) - 1 if own_file else len(text) - len(text.lstrip())
    record = diagnostic.to_dict()
    message = str(diagnostic)
    if own_file and diagnostic.file:  # the editor shows the file and line itself
        message = message.removeprefix(f"{diagnostic.file}:{diagnostic.line}: "
                                       if diagnostic.line else f"{diagnostic.file}: ")
    return types.Diagnostic(
        range=types.Range(start=types.Position(line=line, character=max(start, 0)),
                          end=types.Position(line=line, character=max(len(text), start))),
        message=message, severity=severity, source=SOURCE,
        code=str(record["code"]), data=record)


def _include_line(analysis: Analysis) -> int:
    line = analysis.source.locate(("include",))
    return (line or 1) - 1


def create_server() -> LanguageServer:
    server = LanguageServer("netspec", __version__,
                            text_document_sync_kind=types.TextDocumentSyncKind.Full)
    analyses: dict[str, Analysis] = {}

    def refresh(uri: str) -> None:
        document = server.workspace.get_text_document(uri)
        analysis = analyse(document.source, document_path(uri))
        analyses[uri] = analysis
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=document.version,
            diagnostics=[lsp_diagnostic(d, analysis) for d in analysis.diagnostics]
            + [lsp_diagnostic(d, analysis, types.DiagnosticSeverity.Warning)
               for d in analysis.warnings]))

    def latest(uri: str) -> Analysis:
        if uri not in analyses:
            refresh(uri)
        return analyses[uri]

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        analyses.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def on_hover(params: types.HoverParams) -> types.Hover | None:
        analysis = latest(params.text_document.uri)
        text = hover(analysis, params.position.line, params.position.character)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                        value=text))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=['"', "'", " ", "[", ","]))
    def on_completion(params: types.CompletionParams) -> types.CompletionList:
        analysis = latest(params.text_document.uri)
        items = [types.CompletionItem(label=item.label, kind=_KINDS.get(item.kind),
                                      detail=item.detail or None, insert_text=item.insert)
                 for item in complete(analysis, params.position.line,
                                      params.position.character)]
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def on_definition(params: types.DefinitionParams) -> types.Location | None:
        analysis = latest(params.text_document.uri)
        found = definition(analysis, params.position.line, params.position.character)
        if found is None:
            return None
        position = types.Position(line=found.line - 1, character=0)
        return types.Location(uri=found.path.resolve().as_uri(),
                              range=types.Range(start=position, end=position))

    return server


def serve() -> None:
    """Run the server on standard input and output until the client says exit."""
    create_server().start_io()
