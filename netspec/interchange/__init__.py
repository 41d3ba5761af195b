"""Interchange formats: carry a compiled plan (and its weights) to other tools.

They read a plan and never feed back into it. Each format keeps its per-op mapping beside it
as a table (``torch_ops.TORCH_FORMS`` for PyTorch), and every registered op has an entry there
or an explicit refusal.
"""
