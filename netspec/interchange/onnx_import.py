"""An ONNX model -> netspec spec text and weights, checked by netspec's own loader.

The model is untrusted: its size is bounded before it is read, every tensor's claimed size is
checked against its bytes and against this machine's memory before anything is allocated,
external data must lie inside the model's directory, and every op or attribute netspec cannot
express is listed by ONNX node name instead of stopping at the first. The translation writes a
spec as text (``[nodes."layer1.0.conv1"]`` tables), which is then parsed and compiled like any
spec a person wrote, and the weights are loaded into the compiled network to prove they fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netspec.common.errors import SpecError
from netspec.interchange.onnx_graph import (
    META_DESCRIPTION,
    META_MEAN,
    META_NAME,
    META_STD,
)
from netspec.interchange.onnx_ops import CONTROL_FLOW, FOLDED, IMPORTERS, fuse_gelu
from netspec.interchange.onnx_patterns import PATTERNS
from netspec.interchange.onnx_translator import (
    ImportedModel,
    OnnxImportError,
    Translator,
    clean_id,
    parse_onnx_bytes,
    read_onnx_file,
    spec_text,
    text_of,
    toml_string,
)
from netspec.lang.spec import parse_spec
from netspec.plan.budget import check_memory
from netspec.plan.compiler import compile_plan
from netspec.runtime.executor import Network


# protobuf cannot hold more in one message; ONNX puts larger weights in external files
def _metadata_float(meta: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def translate(model: Any, *, source: str = "model.onnx", directory: Path | None = None,
              input_shape: Sequence[int] | None = None,
              bound: Mapping[str, np.ndarray] | None = None,
              name: str | None = None) -> ImportedModel:
    """Translate a parsed ModelProto. ``bound`` gives values for graph inputs that netspec
    must hold as constants (the conformance tests pass weights as inputs)."""
    model = fuse_gelu(model)
    translator = Translator(model, directory=directory,
                            input_shape=input_shape, bound=bound or {},
                            importers=IMPORTERS, folded=FOLDED, control_flow=CONTROL_FLOW,
                            patterns=PATTERNS)
    translator.run()
    output = translator.output()
    problems = translator.report()
    if problems or output is None:
        raise OnnxImportError(source, problems or ["the model has no output"],
                              note=translator.unsupported_note())
    meta = translator.metadata()
    translator.restore_forms()
    output_node = translator.restore_dropout(output)
    spec_name = clean_id(meta.get(META_NAME) or name or text_of(model.graph.name) or "imported",
                         "imported")
    description = meta.get(META_DESCRIPTION, text_of(model.doc_string) or "")[:10_000]
    text = spec_text(spec_name, description, translator.nodes, output_node, source)
    try:
        spec = parse_spec(text, file=f"{spec_name}.toml")
        plan = compile_plan(spec)
    except SpecError as exc:
        raise OnnxImportError(source, [f"the translated spec does not compile: {d}"
                                       for d in exc.diagnostics]) from None
    check_memory(plan, 1, training=False)
    network = Network(plan)
    network.load_state({**translator.params, **translator.buffers})
    mean, std = _metadata_float(meta, META_MEAN), _metadata_float(meta, META_STD)
    normalisation = (mean, std) if mean is not None and std and std > 0 else None
    return ImportedModel(spec_text=text, plan=plan, network=network,
                         output_onnx_shape=output.onnx_shape,
                         onnx_nodes=len(model.graph.node), normalisation=normalisation,
                         source=source, input_ids=translator.input_ids,
                         static_batch=translator.static_batch)


def import_onnx(path: str | Path, *, input_shape: Sequence[int] | None = None,
                name: str | None = None) -> ImportedModel:
    """Read and translate an ONNX file; external data is read from beside it only."""
    path = Path(path)
    model = read_onnx_file(path)
    return translate(model, source=path.name, directory=path.resolve().parent,
                     input_shape=input_shape, name=name or path.stem)


__all__ = ["ImportedModel", "OnnxImportError", "clean_id", "import_onnx", "parse_onnx_bytes",
           "read_onnx_file", "toml_string", "translate"]
