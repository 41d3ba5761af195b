"""Interchange formats: carry a compiled plan to other tools, and bring their models in.

A format reads a :class:`~netspec.plan.compiler.Plan` (and weights) and never feeds back into the
compiler; an import produces spec text that netspec's own loader then checks like any other.
Each format's optional dependency is imported lazily, so netspec works without it, and each
keeps its per-op mapping beside it as a table (``onnx_ops``, ``torch_ops.TORCH_FORMS``) in
which every registered op has an entry or an explicit refusal.
"""
