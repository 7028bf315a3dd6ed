"""SQL text for the query engines bills live in (Trino and Athena speak the same dialect): quoting, and the
question of a table's columns."""

from __future__ import annotations


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_parts(table: str) -> list[str]:
    """`catalog.schema.table` as its three parts; ValueError if it is not that."""
    parts = table.split(".")
    if len(parts) != 3 or not all(part.strip() == part and part for part in parts):
        raise ValueError(f"the bill table {table!r} is not catalog.schema.table")
    return parts


def columns_query(table: str) -> str:
    """(name, type) of each column of `catalog.schema.table`, in order; unquoted names are lower case there."""
    catalog, schema, name = table_parts(table)
    return (f"SELECT column_name, data_type FROM {quote_identifier(catalog)}.information_schema.columns "
            f"WHERE table_schema = {quote_literal(schema.lower())} AND table_name = {quote_literal(name.lower())} "
            "ORDER BY ordinal_position")
