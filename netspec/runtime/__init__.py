"""Running a plan: the NumPy executor."""
