"""The house rules, checked on the syntax tree of the source (nothing here imports or runs the code checked).

Scope: every module of `cbi_service/`, `adapters/` and `ledger/`; `migrations/` only for the tables it creates.
A *unit* is what a module belongs to: a folder of `cbi_service/` (a domain, or `kit`), a top-level module of
`cbi_service/` (`cbi_service.app`, `cbi_service.cli`, … the composition root), or the `ledger` / `adapters`
package.

Rule 1 — SQL is built and executed only in repositories. A module may not, unless it is a `repository.py`, a
module of a `repository/` package, a `models.py`, or lives in `cbi_service/kit/`, `ledger/` or `migrations/`:
  - refer to a SQLAlchemy statement or expression builder (`BUILDERS`, any name under `sqlalchemy.func`, the
    ORM loader options), however imported (`from sqlalchemy import select`, `import sqlalchemy as sa`,
    `sqlalchemy.dialects.postgresql.insert`, inside a function or not);
  - call an execution method: `execute`, `executemany`, `exec_driver_sql`, `fetchrow`, `fetchval`, the
    asyncpg `copy_*` calls and `stream_scalars` on any receiver (`EXECUTE_ANYWHERE`); and `scalar`, `scalars`,
    `get`, `get_one`, `stream`, `fetch`, `add`, `add_all`, `delete`, `merge`, `refresh` on a receiver named
    like a session or a connection (`session`, `self._session`, `conn`, `connection`, …: `EXECUTE_ON_SESSION`).
  `flush()` (what services do), `commit()`/`rollback()` (the unit of work in `kit/db.py`) and
  `session.connection()` (handing a connection to `ledger.Ledger`) are not SQL and are allowed anywhere.

Rule 2 — each table has one writing unit, its owner. The owner of a table is the unit whose module declares
the model with its `__tablename__`; a table a migration creates with no model (`CREATE TABLE ledger.x`) is
owned as `SCHEMA_OWNERS` says. A write is `insert(M)` / `update(M)` / `delete(M)` of a model class or its
`__table__`, constructing a model `M(...)` (a new row, whether a repository or the caller adds it), a string
literal holding `INSERT INTO t`, `UPDATE t … SET`, `DELETE FROM t`, `MERGE INTO t`, `TRUNCATE t` or
`COPY t (… | FROM`, and asyncpg `copy_records_to_table` / `copy_to_table` into `t`. Not detected: assigning
attributes of a loaded instance (the unit of work writes it at flush), which review has to catch.

Rule 3 — units depend one way. Among the units of `cbi_service/` the graph of imports (every `import` and
`from … import`, at module level, inside functions and under `TYPE_CHECKING`, relative ones resolved) has no
cycle; `kit/` imports nothing of `cbi_service/` outside itself; `ledger/` imports nothing of `cbi_service/`
or `adapters/`.

The checker is tested on small synthetic sources below, so that it cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("cbi_service", "adapters", "ledger", "migrations")

#: Genuine exceptions to rule 1, each with its reason (`cbi_service/migrate.py` and
#: `cbi_service/embedded.py` drive Alembic and pgserver without building SQL themselves). An entry that no
#: longer finds anything fails `test_every_allowance_is_still_needed`.
SQL_ALLOWED: dict[str, str] = {
    "cbi_service/dedup/embedded_engine.py": "a session option of the embedded DuckDB sweeps compute in, settable "
    "only in SQL; never the service's database",
}
#: Genuine exceptions to rule 2: (module path, table) -> reason. Empty today.
WRITE_ALLOWED: dict[tuple[str, str], str] = {}
#: Owners of the tables migrations create without a model, by schema.
SCHEMA_OWNERS = {"ledger": "ledger"}

BUILDERS = frozenset(
    {
        "select", "insert", "update", "delete", "text", "func", "exists", "union", "union_all", "intersect",
        "except_", "literal_column", "column", "table", "values", "bindparam", "case", "and_", "or_", "not_",
        "tuple_", "cast", "lateral", "outerjoin", "join", "true", "false", "null", "over", "within_group",
        "selectinload", "joinedload", "subqueryload", "contains_eager", "load_only", "with_loader_criteria",
        "aliased", "defer", "undefer",
    }
)  # fmt: skip
EXECUTE_ANYWHERE = frozenset(
    {
        "execute", "executemany", "exec_driver_sql", "fetchrow", "fetchval", "stream_scalars",
        "copy_records_to_table", "copy_to_table", "copy_from_table", "copy_from_query",
    }
)  # fmt: skip
EXECUTE_ON_SESSION = frozenset(
    {"scalar", "scalars", "get", "get_one", "stream", "fetch", "add", "add_all", "delete", "merge", "refresh"}
)
WRITE_BUILDERS = frozenset({"insert", "update", "delete"})
COPY_CALLS = frozenset({"copy_records_to_table", "copy_to_table"})


@dataclass(frozen=True, order=True)
class Site:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def unit_of(path: str) -> str:
    """`cbi_service/batches/service.py` -> `batches`; `cbi_service/app.py` -> `cbi_service.app`; else the package."""
    parts = path.split("/")
    if parts[0] == "cbi_service":
        return parts[1] if len(parts) > 2 else f"cbi_service.{parts[1].removesuffix('.py')}"
    return parts[0]


def _dotted(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sql_exempt(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return (
        name in {"repository.py", "models.py"}
        or "/repository/" in path
        or path.startswith(("cbi_service/kit/", "ledger/", "migrations/"))
    )


def _sessionish(receiver: ast.expr) -> bool:
    """A receiver named like a session or a connection: `session`, `self._session`, `conn`, `ctx.connection`."""
    if isinstance(receiver, ast.Name):
        name = receiver.id
    elif isinstance(receiver, ast.Attribute):
        name = receiver.attr
    else:
        return False
    name = name.lower().strip("_")
    return "session" in name or name in {"conn", "connection", "db"} or name.endswith(("_conn", "_connection"))


@dataclass
class Module:
    path: str
    tree: ast.Module
    #: local name -> the dotted name it stands for, from every import anywhere in the module.
    names: dict[str, str] = field(default_factory=dict)
    #: every module this one imports (absolute dotted names), with the line.
    imports: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, path: str, source: str) -> Module:
        module = cls(path, ast.parse(source, filename=path))
        package = _dotted(path) if path.endswith("__init__.py") else _dotted(path).rpartition(".")[0]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports.append((alias.name, node.lineno))
                    if alias.asname:
                        module.names[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        module.names[head] = head
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                module.imports.append((base, node.lineno))
                for alias in node.names:
                    module.names[alias.asname or alias.name] = f"{base}.{alias.name}"
                    module.imports.append((f"{base}.{alias.name}", node.lineno))
        return module

    def qualify(self, node: ast.expr) -> str | None:
        """The dotted name an expression refers to through the imports (`sa.func.now` -> `sqlalchemy.func.now`)."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        return None


def _is_builder(name: str | None) -> bool:
    if not name or not name.startswith("sqlalchemy."):
        return False
    parts = name.split(".")
    return parts[-1] in BUILDERS or "func" in parts[1:]


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Every string literal but docstrings; an f-string with its placeholders as `?`."""
    skip = _docstrings(tree)
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else " ? " for v in node.values)
            inner.update(id(v) for v in node.values)
            yield str(text), node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inner:
            yield node.value, node.lineno


def sql_tokens(sql: str) -> list[str]:
    """Words of a SQL text (identifiers keep their dots; quotes dropped), with `(` kept as a token."""
    out: list[str] = []
    word = ""
    for char in sql:
        if char.isalnum() or char in "._":
            word += char
        else:
            if word:
                out.append(word.lower())
                word = ""
            if char == "(":
                out.append("(")
    if word:
        out.append(word.lower())
    return out


def sql_writes(sql: str) -> Iterator[str]:
    """Tables a SQL text writes: INSERT INTO t, UPDATE t … SET, DELETE FROM t, MERGE INTO t, TRUNCATE t, COPY t."""
    words = sql_tokens(sql)
    for i, word in enumerate(words):
        rest = [w for w in words[i + 1 : i + 5] if w not in {"only", "table"}]
        target = None
        if (word in {"insert", "merge"} and rest[:1] == ["into"]) or (word == "delete" and rest[:1] == ["from"]):
            target = rest[1] if len(rest) > 1 else None
        elif word == "update" and "set" in rest[1:3]:
            target = rest[0]
        elif word == "truncate" or (word == "copy" and rest[1:2] in (["("], ["from"])):
            target = rest[0] if rest else None
        if target and target not in {"(", "?"}:
            yield target


@dataclass
class Codebase:
    modules: dict[str, Module]

    @classmethod
    def of(cls, sources: Mapping[str, str]) -> Codebase:
        return cls({path: Module.parse(path, text) for path, text in sorted(sources.items())})

    @classmethod
    def on_disk(cls) -> Codebase:
        return cls.of(
            {
                path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
                for top in SCANNED
                for path in sorted((ROOT / top).rglob("*.py"))
                if ".venv" not in path.parts
            }
        )

    def code(self) -> Iterator[Module]:
        return (m for p, m in self.modules.items() if not p.startswith("migrations/"))

    # Rule 1 ----------------------------------------------------------------------------------------------------

    def sql_outside_repositories(self) -> list[Site]:
        sites = []
        for module in self.code():
            if _sql_exempt(module.path):
                continue
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Name | ast.Attribute):
                    parent = node.value if isinstance(node, ast.Attribute) else None
                    name = module.qualify(node)
                    if _is_builder(name) and not (parent is not None and _is_builder(module.qualify(parent))):
                        sites.append(Site(module.path, node.lineno, f"builds SQL with {name}"))
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    method = node.func.attr
                    if method in EXECUTE_ANYWHERE or (method in EXECUTE_ON_SESSION and _sessionish(node.func.value)):
                        sites.append(Site(module.path, node.lineno, f"executes SQL with .{method}()"))
        return sorted(set(sites))

    # Rule 2 ----------------------------------------------------------------------------------------------------

    def models(self) -> dict[str, tuple[str, str]]:
        """Dotted class name -> (table, owning unit), for every class with a `__tablename__`."""
        found = {}
        for module in self.code():
            for node in ast.walk(module.tree):
                if not isinstance(node, ast.ClassDef):
                    continue
                table, schema = None, None
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                        target, value = stmt.targets[0].id, stmt.value
                        if target == "__tablename__" and isinstance(value, ast.Constant):
                            table = str(value.value)
                        elif target == "__table_args__":
                            schema = _schema_of(value)
                if table:
                    qualified = f"{schema}.{table}" if schema else table
                    found[f"{_dotted(module.path)}.{node.name}"] = (qualified, unit_of(module.path))
        return found

    def table_owners(self) -> dict[str, str]:
        owners = dict(self.models().values())
        for path, module in self.modules.items():
            if not path.startswith("migrations/"):
                continue
            for text, _ in _strings(module.tree):
                words = sql_tokens(text)
                for i, word in enumerate(words[:-2]):
                    if word == "create" and words[i + 1] == "table":
                        name = words[i + 2] if words[i + 2] != "if" else words[i + 5]
                        schema = name.partition(".")[0] if "." in name else None
                        if name not in owners and schema in SCHEMA_OWNERS:
                            owners[name] = SCHEMA_OWNERS[schema]
                        elif name not in owners:
                            owners[name] = ""
        return owners

    def writes(self) -> list[tuple[Site, str]]:
        """(site, table) for every write found (see the module docstring)."""
        models = self.models()
        owners = self.table_owners()
        found: list[tuple[Site, str]] = []

        for module in self.code():
            here = _dotted(module.path)

            def table_of(node: ast.expr, module: Module = module, here: str = here) -> str | None:
                """The table of a model class expression: imported, `module.Model`, local, or `Model.__table__`."""
                if isinstance(node, ast.Attribute) and node.attr == "__table__":
                    node = node.value
                dotted = module.qualify(node)
                if dotted is None and isinstance(node, ast.Name):
                    dotted = f"{here}.{node.id}"
                return models[dotted][0] if dotted in models else None

            for node in ast.walk(module.tree):
                if not isinstance(node, ast.Call):
                    continue
                site = Site(module.path, node.lineno, "")
                name = module.qualify(node.func)
                if name and _is_builder(name) and name.rsplit(".", 1)[1] in WRITE_BUILDERS and node.args:
                    if table := table_of(node.args[0]):
                        found.append((site, table))
                elif table := table_of(node.func):
                    found.append((site, table))  # a new row: what the unit of work inserts at flush
                elif isinstance(node.func, ast.Attribute) and node.func.attr in COPY_CALLS:
                    target = node.args[0] if node.args else None
                    schema = None
                    for keyword in node.keywords:
                        if keyword.arg == "table_name":
                            target = keyword.value
                        elif keyword.arg == "schema_name" and isinstance(keyword.value, ast.Constant):
                            schema = keyword.value.value
                    if isinstance(target, ast.Constant):
                        found.append((site, f"{schema}.{target.value}" if schema else str(target.value)))
        # SQL text, once per module (not per scope).
        for module in self.code():
            for text, line in _strings(module.tree):
                for table in sql_writes(text):
                    if table in owners:
                        found.append((Site(module.path, line, ""), table))
        return sorted(set(found))

    def foreign_writes(self) -> list[Site]:
        owners = self.table_owners()
        sites = []
        for site, table in self.writes():
            owner = owners.get(table)
            writer = unit_of(site.path)
            if owner is not None and owner != writer and (site.path, table) not in WRITE_ALLOWED:
                sites.append(Site(site.path, site.line, f"writes {table}, owned by {owner or 'nobody'}"))
        return sites

    def unowned_tables(self) -> list[str]:
        return sorted(t for t, owner in self.table_owners().items() if not owner)

    # Rule 3 ----------------------------------------------------------------------------------------------------

    def unit_imports(self) -> dict[str, dict[str, Site]]:
        """unit -> imported unit -> first site, for the units of `cbi_service/`."""
        graph: dict[str, dict[str, Site]] = defaultdict(dict)
        for path, module in self.modules.items():
            if not path.startswith("cbi_service/"):
                continue
            source = unit_of(path)
            for target, line in module.imports:
                parts = target.split(".")
                if parts[0] != "cbi_service" or len(parts) < 2:
                    continue
                # `cbi_service.app` is a top-level module; anything else names a folder.
                unit = f"cbi_service.{parts[1]}" if f"cbi_service/{parts[1]}.py" in self.modules else parts[1]
                if unit != source:
                    graph[source].setdefault(unit, Site(path, line, f"imports {target}"))
        return graph

    def cycles(self) -> list[list[Site]]:
        """The import evidence of every strongly connected set of units (Tarjan)."""
        graph = self.unit_imports()
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        components: list[list[str]] = []

        def visit(node: str) -> None:
            index[node] = low[node] = len(index)
            stack.append(node)
            for nxt in graph.get(node, {}):
                if nxt not in index:
                    visit(nxt)
                    low[node] = min(low[node], low[nxt])
                elif nxt in stack:
                    low[node] = min(low[node], index[nxt])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

        for node in sorted(graph):
            if node not in index:
                visit(node)
        return sorted(
            sorted(graph[a][b] for a in component for b in component if b in graph.get(a, {}))
            for component in components
        )

    def kit_imports_outside(self) -> list[Site]:
        return sorted(site for unit, site in self.unit_imports().get("kit", {}).items())

    def ledger_imports_outside(self) -> list[Site]:
        sites: dict[tuple[str, int], Site] = {}
        for path, module in self.modules.items():
            for target, line in module.imports:
                if path.startswith("ledger/") and target.split(".")[0] in {"cbi_service", "adapters"}:
                    sites.setdefault((path, line), Site(path, line, f"imports {target}"))
        return sorted(sites.values())


def _schema_of(value: ast.expr) -> str | None:
    """The `schema` of a `__table_args__` dict (alone or last in the tuple)."""
    if isinstance(value, ast.Tuple) and value.elts:
        value = value.elts[-1]
    if isinstance(value, ast.Dict):
        for key, item in zip(value.keys, value.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "schema" and isinstance(item, ast.Constant):
                return str(item.value)
    return None


def _listing(sites: Iterable[object]) -> str:
    return "\n".join(f"  {site}" for site in sites)


CODE = Codebase.on_disk()


# The rules on the code -------------------------------------------------------------------------------------------


def test_sql_is_built_and_executed_only_in_repositories() -> None:
    sites = [s for s in CODE.sql_outside_repositories() if s.path not in SQL_ALLOWED]
    assert not sites, f"SQL outside repositories ({len(sites)}):\n{_listing(sites)}"


def test_every_table_has_an_owner() -> None:
    assert CODE.table_owners(), "no table found: the checker reads nothing"
    assert not CODE.unowned_tables(), (
        f"tables no model declares and SCHEMA_OWNERS does not own: {CODE.unowned_tables()}"
    )


def test_each_table_is_written_only_by_its_owner() -> None:
    assert CODE.writes(), "no write found: the checker reads nothing"
    sites = CODE.foreign_writes()
    assert not sites, f"tables written outside their owner ({len(sites)}):\n{_listing(sites)}"


def test_no_import_cycle_between_units() -> None:
    cycles = CODE.cycles()
    assert not cycles, "import cycles between folders of cbi_service/:\n" + "\n".join(
        "  cycle:\n" + _listing(f"  {site}" for site in cycle) for cycle in cycles
    )


def test_kit_imports_no_domain() -> None:
    sites = CODE.kit_imports_outside()
    assert not sites, f"kit/ imports outside itself:\n{_listing(sites)}"


def test_ledger_is_standalone() -> None:
    sites = CODE.ledger_imports_outside()
    assert not sites, f"ledger/ imports the service:\n{_listing(sites)}"


def test_every_allowance_is_still_needed() -> None:
    found = {s.path for s in CODE.sql_outside_repositories()}
    assert not set(SQL_ALLOWED) - found, f"stale SQL_ALLOWED entries: {sorted(set(SQL_ALLOWED) - found)}"
    written = {(s.path, t) for s, t in CODE.writes()}
    assert not set(WRITE_ALLOWED) - written, f"stale WRITE_ALLOWED entries: {sorted(set(WRITE_ALLOWED) - written)}"


# The checker on synthetic sources ---------------------------------------------------------------------------------

MODELS = {
    "cbi_service/kit/models.py": "class Base: ...\n",
    "cbi_service/batches/models.py": (
        "from cbi_service.kit.models import Base\nclass Batch(Base):\n    __tablename__ = 'payment_batches'\n"
    ),
    "cbi_service/entitlements/models.py": (
        "from cbi_service.kit.models import Base\n"
        "class Entitlement(Base):\n    __tablename__ = 'entitlements'\n"
        "class EntitlementEvent(Base):\n    __tablename__ = 'entitlement_events'\n"
    ),
    "migrations/versions/0001.py": (
        'SQL = """CREATE TABLE ledger.entries (id int);\nCREATE TABLE IF NOT EXISTS orphans ()"""\n'
    ),
}


def _code(**modules: str) -> Codebase:
    return Codebase.of(MODELS | {path.replace("__", "/") + ".py": text for path, text in modules.items()})


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy import select\nasync def f(s):\n    return select(X)\n",
        "import sqlalchemy as sa\nQ = sa.update(X)\n",
        "def f():\n    from sqlalchemy import text as t\n    return t('SELECT 1')\n",
        "from sqlalchemy import func\nN = func.count()\n",
        "import sqlalchemy\nN = sqlalchemy.func.now()\n",
        "from sqlalchemy.dialects.postgresql import insert\nQ = insert(X)\n",
        "from sqlalchemy.orm import selectinload\nO = selectinload(X.y)\n",
        "async def f(session):\n    await session.execute(q)\n",
        "async def f(self):\n    return await self._session.scalars(q)\n",
        "async def f(session):\n    return await session.get(X, 1)\n",
        "async def f(session):\n    session.add(X())\n",
        "async def f(conn):\n    return await conn.fetch('SELECT 1')\n",
        "async def f(pool):\n    await pool.copy_records_to_table('t', records=[])\n",
    ],
)
def test_checker_finds_sql_outside_repositories(source: str) -> None:
    sites = _code(cbi_service__batches__service=source).sql_outside_repositories()
    assert [s.path for s in sites] == ["cbi_service/batches/service.py"], sites


@pytest.mark.parametrize(
    "path",
    [
        "cbi_service__batches__repository",
        "cbi_service__batches__repository____init__",
        "cbi_service__kit__db",
        "ledger__core",
        "cbi_service__batches__models",
    ],
)
def test_checker_leaves_repositories_kit_ledger_and_models_alone(path: str) -> None:
    source = "from sqlalchemy import select\nasync def f(session):\n    return await session.execute(select(X))\n"
    assert _code(**{path: source}).sql_outside_repositories() == []


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "async def f(session: AsyncSession):\n    await session.flush()\n",
        "async def f(session):\n    conn = await session.connection()\n    await session.commit()\n",
        "def f(d, tasks, client):\n    tasks.add(1)\n    client.stream('GET', '/')\n    return d.get('k')\n",
        '"""Update the batch, then select who to pay: execute(this) is prose."""\n',
        "from sqlalchemy.exc import DBAPIError\nfrom sqlalchemy import Select\nx: Select\n",
    ],
)
def test_checker_lets_plain_code_pass(source: str) -> None:
    assert _code(cbi_service__batches__service=source).sql_outside_repositories() == []


def test_checker_maps_tables_to_owners() -> None:
    owners = _code().table_owners()
    assert owners == {
        "payment_batches": "batches",
        "entitlements": "entitlements",
        "entitlement_events": "entitlements",
        "ledger.entries": "ledger",
        "orphans": "",
    }
    assert _code().unowned_tables() == ["orphans"]


@pytest.mark.parametrize(
    ("source", "table"),
    [
        (
            "from sqlalchemy import update\nfrom cbi_service.entitlements.models import Entitlement\n"
            "Q = update(Entitlement).values(status='frozen')\n",
            "entitlements",
        ),
        (
            "import sqlalchemy as sa\nfrom cbi_service.entitlements import models\nQ = sa.delete(models.Entitlement)\n",
            "entitlements",
        ),
        (
            "from sqlalchemy.dialects.postgresql import insert\n"
            "from cbi_service.entitlements.models import EntitlementEvent\nQ = insert(EntitlementEvent.__table__)\n",
            "entitlement_events",
        ),
        (
            "from cbi_service.entitlements.models import Entitlement\nasync def f(session):\n"
            "    session.add(Entitlement(id=1))\n",
            "entitlements",
        ),
        (
            "from cbi_service.entitlements.models import Entitlement as E\nasync def f(self, rows):\n"
            "    item = E(id=1)\n    self.session.add(item)\n",
            "entitlements",
        ),
        (
            "from cbi_service.entitlements.models import EntitlementEvent\nasync def f(session, rows):\n"
            "    session.add_all([EntitlementEvent(id=r) for r in rows])\n",
            "entitlement_events",
        ),
        (
            "from sqlalchemy import text\nQ = text('UPDATE entitlements SET status = :s WHERE id = :b')\n",
            "entitlements",
        ),
        ('SQL = """INSERT INTO entitlement_events (entitlement_id) SELECT id FROM x"""\n', "entitlement_events"),
        ("def f(t):\n    return f'DELETE FROM entitlements WHERE id = {t}'\n", "entitlements"),
        ("async def f(conn):\n    await conn.copy_records_to_table('entitlements', records=[])\n", "entitlements"),
        (
            "async def f(conn):\n"
            "    await conn.copy_records_to_table(table_name='entries', schema_name='ledger', records=[])\n",
            "ledger.entries",
        ),
        ('SQL = "COPY entitlements (id, status) FROM STDIN"\n', "entitlements"),
    ],
)
def test_checker_finds_writes_outside_the_owner(source: str, table: str) -> None:
    code = _code(cbi_service__batches__repository=source)
    assert [t for _, t in code.writes()] == [table]
    foreign = code.foreign_writes()
    assert [s.path for s in foreign] == ["cbi_service/batches/repository.py"], foreign
    assert foreign[0].what.startswith(f"writes {table}, owned by ")


def test_checker_lets_the_owner_write_and_others_read() -> None:
    owner = (
        "from sqlalchemy import update, insert, select\nfrom cbi_service.entitlements.models import Entitlement\n"
        "Q = update(Entitlement)\nR = insert(Entitlement)\n"
    )
    reader = (
        "from sqlalchemy import select, text\nfrom cbi_service.entitlements.models import Entitlement\n"
        "Q = select(Entitlement)\nR = text('SELECT * FROM entitlements')\n"
        "M = 'could not update entitlements, delete from the list'\n"
        "from cbi_service.entitlements.schemas import EntitlementEvent\nOUT = EntitlementEvent(id=1)\n"
    )
    code = _code(cbi_service__entitlements__repository=owner, cbi_service__batches__repository=reader)
    assert len(code.writes()) == 2
    assert code.foreign_writes() == []


def test_checker_finds_folder_cycles_including_function_level_imports() -> None:
    code = _code(
        cbi_service__batches__service="from cbi_service.entitlements import service\n",
        cbi_service__entitlements__service="def f():\n    from cbi_service.batches.service import g\n",
        cbi_service__audit__service="from ..auth import roles\n",
        cbi_service__auth__roles=(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cbi_service import audit\n"
        ),
        cbi_service__jobs__service="from cbi_service.kit import db\n",
    )
    cycles = code.cycles()
    assert [sorted({unit_of(s.path) for s in cycle}) for cycle in cycles] == [
        ["audit", "auth"],
        ["batches", "entitlements"],
    ]
    assert [s.line for s in cycles[1]] == [1, 2]


def test_checker_lets_one_way_imports_pass() -> None:
    code = _code(
        cbi_service__batches__service="from cbi_service.entitlements import service\nfrom . import repository\n",
        cbi_service__entitlements__service="from cbi_service.kit.db import x\n",
        cbi_service__app="from cbi_service.batches import router\n",
    )
    assert code.cycles() == []
    assert code.kit_imports_outside() == []


def test_checker_finds_kit_and_ledger_importing_the_service() -> None:
    code = _code(
        cbi_service__kit__idempotency="from cbi_service.auth.dependencies import current_principal\n",
        cbi_service__kit__db="def f():\n    import cbi_service.app\n",
        ledger__core="from cbi_service.kit import money\n",
    )
    assert [s.what for s in code.kit_imports_outside()] == [
        "imports cbi_service.app",
        "imports cbi_service.auth.dependencies",
    ]
    assert [s.path for s in code.ledger_imports_outside()] == ["ledger/core.py"]
