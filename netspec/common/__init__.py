"""What every stage shares: errors and diagnostics, atomic writes, lazy imports, tables, extras."""
