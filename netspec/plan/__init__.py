"""The plan: a flat spec compiled to a DAG with shapes, parameters and FLOPs."""
