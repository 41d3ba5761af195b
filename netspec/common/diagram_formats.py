"""The diagram formats and layouts ``netspec draw`` offers, importable without the compiler so
that the command line can describe them before anything heavy is loaded."""

FORMATS = {
    ".dot": "Graphviz DOT text",
    ".mmd": "Mermaid flowchart text",
    ".svg": "SVG image (Graphviz, or netspec's own layout without it)",
    ".png": "PNG image (Graphviz, else netspec's own drawing with Pillow)",
}
RANKDIRS = ("TB", "LR")
