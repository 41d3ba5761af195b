"""The editor side."""
