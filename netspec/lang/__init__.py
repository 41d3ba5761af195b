"""The spec language: TOML text to a flat, checked spec."""
