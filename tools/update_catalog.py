"""Rewrite netspec/catalog.json (the stored figures of ``netspec list``) and
netspec/architectures/netspec.schema.json (the JSON Schema of the spec language) after a change
to the shipped architectures, the ops or the spec models. Tests fail while either is stale."""

from netspec.editor.schema import SCHEMA_FILE, write_schema
from netspec.plan.catalog import CATALOG_FILE, write_catalog

if __name__ == "__main__":
    write_schema()
    write_catalog()
    print(f"wrote {CATALOG_FILE} and {SCHEMA_FILE}")
