"""The SQL files that migrations run: split into statements without cutting a function body."""

from __future__ import annotations

from importlib.resources import files

import pytest

from ledger.schema import split_statements, sql_statements, sql_text

SQL_FILES = sorted(p.name for p in files("ledger").joinpath("sql").iterdir() if p.name.endswith(".sql"))


def test_a_function_body_is_one_statement_with_its_semicolons():
    sql = (
        "-- a comment; not an end\n"
        "CREATE TABLE t (a int);\n"
        "\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "    BEGIN\n"
        "        RETURN 1;\n"
        "    END $$;\n"
        "-- trailing note\n"
    )
    assert split_statements(sql) == [
        "-- a comment; not an end\nCREATE TABLE t (a int);\n",
        "\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n    BEGIN\n        RETURN 1;\n    END $$;\n",
    ]


@pytest.mark.parametrize(
    "sql", ["CREATE TABLE t (a int)\n", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n    SELECT 1;\n"]
)
def test_sql_that_ends_inside_a_statement_is_refused(sql):
    with pytest.raises(ValueError, match="ends inside a statement"):
        split_statements(sql)


@pytest.mark.parametrize("name", SQL_FILES)
def test_every_file_splits_into_whole_statements(name):
    statements = sql_statements(name)
    assert statements
    assert all(s.rstrip().endswith(";") and s.count("$$") % 2 == 0 for s in statements)
    assert sql_text(name).startswith("".join(statements))
