"""The layer diagram of docs/architecture.md, checked on the import graph.

Every import statement of every module counts: top-level, inside functions (lazy imports)
and under ``if TYPE_CHECKING:``, since each still ties the importer to the imported module.
Relative imports are resolved; ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module, else to ``pkg``. Importing ``jobber.x.y`` runs ``jobber/__init__.py`` too, but
that implicit edge is not counted: only an explicit ``import jobber`` or ``from jobber
import ...`` is an edge to the package itself.

The graph is read with ``ast``, nothing is imported, so a broken module cannot hide an edge.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
PACKAGES = ("jobber", "jobber_magics", "jobber_lab")
NOTEBOOK_LIBRARIES = {"IPython", "ipywidgets", "ipykernel", "jobber_magics"}
ISLAND = frozenset(f"jobber._backends.local.{name}" for name in (
    "supervisor", "job_child", "isolation", "cgroupfs", "cgroup_v1", "cgroup_v2", "unconfined", "systemd", "retrying", "waking", "logcap",
    "gpus", "bpf_devices", "device_cover"))
# Shared with the rest of jobber, standard library only themselves: the atomic write, the
# job states, the job spec (with its limits and its names) and the size text exist once, for the
# supervisor too.
ISLAND_MAY_IMPORT = frozenset({"jobber._errors", "jobber._files", "jobber._states", "jobber._jobs.spec",
                               "jobber._jobs.spec_names", "jobber._limits", "jobber._text", "jobber._usage"})
ISLAND_MAY_IMPORT_FOR_TYPES = frozenset({"jobber._limits"})
REMOTE_CLIENT = "jobber._backends.remote"
SERVER_LIBRARIES = {"aiohttp", "cryptography"}


@dataclass(frozen=True)
class Import:
    """One imported name (or module) of one import statement."""

    importer: str  # the importing module, dotted
    target: str  # the module it ties the importer to (see the module docstring)
    imported: str  # what the statement names: "jobber._limits.format_size", "jobber"
    line: int
    statement: str
    type_checking: bool  # under `if TYPE_CHECKING:`
    path: Path

    @property
    def where(self) -> str:
        note = " (under TYPE_CHECKING)" if self.type_checking else ""
        return f"{self.path.relative_to(REPO)}:{self.line} `{self.statement}`{note}"


def fail_on(problems: list[str], what: str, fix: str) -> None:
    """Fail with what is wrong, where, and what to do."""
    if problems:
        places = "\n".join(f"  {p}" for p in problems)
        pytest.fail(f"{what}:\n{places}\n{fix}", pytrace=False)


def places(imports) -> list[str]:
    """Where each statement is, once (a statement importing three names is one place)."""
    return list(dict.fromkeys(imp.where for imp in imports))


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of jobber and jobber_magics, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path, REPO)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in the tree, and whether it sits under TYPE_CHECKING."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, type_checking))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        parts = parts[:-(level - 1)]
    return ".".join(parts + ([name] if name else []))


def imports_of(name: str, path: Path, known: set[str] | dict[str, Path]) -> list[Import]:
    """The imports of one module; ``known`` are the modules ``from pkg import x`` may name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node, type_checking in _statements(tree):
        statement = ast.unparse(node)
        statement = statement if len(statement) <= 100 else statement[:97] + "..."
        if isinstance(node, ast.Import):
            pairs = [(alias.name, alias.name) for alias in node.names]
        else:
            source = node.module or ""
            if node.level:
                source = _resolve_relative(name, path.name == "__init__.py", node.level, node.module)
            named = [f"{source}.{alias.name}" if source else alias.name for alias in node.names]
            pairs = [(child if child in known or not source else source, child) for child in named]
        found += [Import(name, target, imported, node.lineno, statement, type_checking, path)
                  for target, imported in pairs]
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    known = modules()
    return tuple(imp for name, path in known.items() for imp in imports_of(name, path, known))


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _top(module: str) -> str:
    return module.split(".")[0]


def _is_stdlib(module: str) -> bool:
    return _top(module) in sys.stdlib_module_names


@cache
def jobber_graph() -> dict[str, dict[str, list[Import]]]:
    """importer -> imported -> the statements behind that edge, among jobber's modules."""
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in all_imports():
        if _in(imp.importer, "jobber") and imp.target in modules() and _in(imp.target, "jobber") \
                and imp.target != imp.importer:
            graph[imp.importer][imp.target].append(imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, {})):
            if child not in index:
                connect(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(set(graph) | {c for children in graph.values() for c in children}):
        if node not in index:
            connect(node)
    return sorted(components)


def import_cycles(graph: dict[str, dict[str, list[Import]]], limit: int = 200) -> list[list[str]]:
    """The elementary cycles, each from its smallest module back to it, shortest first."""
    cycles: list[list[str]] = []

    def walk(path: list[str], allowed: set[str]) -> None:  # cycles back to path[0] in allowed
        for child in sorted(graph.get(path[-1], {})):
            if len(cycles) >= limit:
                return
            if child == path[0]:
                cycles.append([*path, child])
            elif child in allowed and child not in path:
                walk([*path, child], allowed)

    for component in _strongly_connected(graph):
        for start in component:  # through start and modules after it only: each cycle once
            walk([start], {m for m in component if m > start})
    return sorted(cycles, key=lambda cycle: (len(cycle), cycle))


def describe_cycles(graph: dict[str, dict[str, list[Import]]], cycles: list[list[str]]) -> list[str]:
    """Each cycle as a chain, followed by the import statements that make its edges."""
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        for importer, imported in itertools.pairwise(cycle):
            lines += [f"    {where}" for where in dict.fromkeys(imp.where for imp in graph[importer][imported])]
    return lines


class TestImportGraph:
    """The walker itself, on the statements it must not miss."""

    def test_sees_lazy_type_checking_and_relative_imports(self, tmp_path):
        package = tmp_path / "pkg"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "b.py").write_text("")
        (package / "a.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.b import Thing\nelse:\n    import json\n"
            "def f():\n    from . import b\n    from .b import other\n    from pkg import name\n")
        found = imports_of("pkg.a", package / "a.py", {"pkg", "pkg.a", "pkg.b"})
        assert [(i.target, i.type_checking) for i in found] == [
            ("typing", False), ("pkg.b", True), ("json", False), ("pkg.b", False),
            ("pkg.b", False), ("pkg", False)]

    def test_names_every_cycle_as_a_chain(self):
        def edge(importer: str, imported: str) -> list[Import]:
            return [Import(importer, imported, imported, 1, f"import {imported}", False, REPO / "x.py")]

        graph = {"a": {"b": edge("a", "b")}, "b": {"a": edge("b", "a"), "c": edge("b", "c")},
                 "c": {"a": edge("c", "a")}, "d": {"a": edge("d", "a")}}
        assert import_cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
        assert describe_cycles(graph, [["a", "b", "a"]]) == [
            "a -> b -> a", "    x.py:1 `import b`", "    x.py:1 `import a`"]


def test_no_import_cycles():
    graph = jobber_graph()
    cycles = import_cycles(graph)
    fail_on(describe_cycles(graph, cycles), f"jobber has {len(cycles)} import cycle(s)",
            "Break each cycle: move what both modules need into a module of its own that both "
            "import, or import it from the module that defines it. An import under "
            "TYPE_CHECKING or inside a function closes a cycle too.")


@cache
def public_api() -> frozenset[str]:
    """``jobber.__all__``, read from jobber/__init__.py without importing it."""
    tree = ast.parse((REPO / "jobber" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("jobber/__init__.py has no __all__ list")


def test_magics_use_only_the_public_api():
    problems = []
    for imp in all_imports():
        if not _in(imp.importer, "jobber_magics") or not _in(imp.imported, "jobber"):
            continue
        name = imp.imported.removeprefix("jobber.")
        if imp.imported != "jobber" and not (imp.target == "jobber" and name in public_api()):
            problems.append(f"{imp.where}: jobber.{name} is not in jobber.__all__")
    for module, path in modules().items():  # `import jobber` then `jobber._x` is the same thing
        if _in(module, "jobber_magics"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id == "jobber" and node.attr not in public_api() | {"__version__"}:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} uses jobber.{node.attr}, "
                                    f"which is not in jobber.__all__")
    fail_on(list(dict.fromkeys(problems)),
            "jobber_magics may use only the public API: `import jobber`, and `from jobber import "
            "NAME` for a NAME of jobber.__all__",
            "Use a public name instead. If the magics need something the API lacks, export it "
            "from jobber/__init__.py (in __all__, with a Google-style docstring, and in "
            "tests/test_exported_members.py); if it is only presentation, give jobber_magics its "
            "own helper.")


def test_the_core_never_imports_notebook_libraries():
    fail_on(places(imp for imp in all_imports()
                   if _in(imp.importer, "jobber") and _top(imp.target) in NOTEBOOK_LIBRARIES),
            f"the core (jobber/) imports {', '.join(sorted(NOTEBOOK_LIBRARIES))}",
            "Move that code into jobber_magics, the Jupyter face of the core: the core must "
            "import and run where none of them is installed.")


def test_the_supervisor_island_imports_only_the_standard_library():
    may_import = ISLAND | ISLAND_MAY_IMPORT
    problems = []
    for imp in all_imports():
        if imp.importer not in may_import or _is_stdlib(imp.target) or imp.target in may_import:
            continue
        if imp.importer in ISLAND and imp.target in ISLAND_MAY_IMPORT_FOR_TYPES and imp.type_checking:
            continue
        problems.append(imp)
    fail_on(places(problems),
            "the supervisor island (jobber/_backends/local/{supervisor,isolation,cgroupfs,"
            "cgroup_v1,cgroup_v2,unconfined}.py) runs in a bare interpreter at every job start "
            "and end, without jobber/__init__.py; it may import only the standard library, its "
            "own modules and " + ", ".join(sorted(ISLAND_MAY_IMPORT)) + " (and "
            + ", ".join(sorted(ISLAND_MAY_IMPORT_FOR_TYPES)) + " under TYPE_CHECKING only), and "
            + ", ".join(sorted(ISLAND_MAY_IMPORT)) + " only the standard library; but",
            "Pass what it needs as arguments, or move the code it needs into the island. A "
            "standard-library-only base module that the island is meant to share goes into "
            "ISLAND_MAY_IMPORT in tests/test_architecture.py (this test then checks its "
            "imports too).")


def test_test_modules_do_not_import_each_other():
    tests = {path.stem for path in TESTS.glob("test_*.py")}
    problems = []
    for path in sorted(TESTS.glob("test_*.py")):
        for imp in imports_of(path.stem, path, set()):
            parts = imp.imported.split(".")
            named = {parts[0], ".".join(parts[:2]).removeprefix("tests.")}
            if named & (tests - {path.stem}):
                problems.append(imp)
    fail_on(places(problems),
            "test modules import other test modules (pytest then collects and runs the "
            "imported module's tests twice, and a rename breaks an unrelated file)",
            "Move what they share into a helper module of tests/ that is not a test module "
            "(as certfactory.py and polling.py are), or into a fixture in tests/conftest.py.")


def test_the_remote_client_imports_only_the_standard_library_and_jobber():
    fail_on(places(imp for imp in all_imports() if _in(imp.importer, REMOTE_CLIENT) and not (
                _is_stdlib(imp.target) or (_in(imp.target, "jobber") and not _in(imp.target, "jobber._server")))),
            "the remote client (jobber/_backends/remote/) must speak HTTPS with the standard "
            "library (http.client, ssl), so that a client needs nothing the server does; it "
            "imports",
            "Use the standard library, or a jobber module that needs neither aiohttp nor "
            "cryptography (never jobber._server, which is the aiohttp side).")


def test_nothing_the_remote_client_imports_needs_aiohttp_or_cryptography():
    graph = jobber_graph()
    libraries: dict[str, Import] = {}  # a jobber module -> its first import of such a library
    for imp in all_imports():
        if _in(imp.importer, "jobber") and _top(imp.target) in SERVER_LIBRARIES:
            libraries.setdefault(imp.importer, imp)

    def shortest_chain_to_a_library(start: str) -> list[str] | None:
        chains, todo = {start: [start]}, [start]
        while todo:
            module = todo.pop(0)
            if module in libraries:
                return chains[module]
            for child in sorted(graph.get(module, {})):
                if child not in chains:
                    chains[child] = [*chains[module], child]
                    todo.append(child)
        return None

    problems = []
    for imp in all_imports():
        if _in(imp.importer, REMOTE_CLIENT) and _in(imp.target, "jobber") \
                and not _in(imp.target, REMOTE_CLIENT) and imp.target in modules():
            chain = shortest_chain_to_a_library(imp.target)
            if chain is not None:
                library = libraries[chain[-1]]
                problems.append(f"{imp.where} brings in {_top(library.target)}: "
                                f"{' -> '.join(chain)}, {library.where}")
    fail_on(list(dict.fromkeys(problems)),
            "the remote client (jobber/_backends/remote/) imports jobber modules that need "
            + " or ".join(sorted(SERVER_LIBRARIES)),
            "Import what the client needs from a module that needs neither (move it there if "
            "it lives beside code that does).")




def _private_name(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports() -> list[Import]:
    """``from a.b import _x`` where ``_x`` is a name of ``a.b``, not a module of its own."""
    known = modules()
    return [imp for imp in all_imports()
            if imp.target != imp.imported and imp.imported not in known
            and _private_name(imp.imported.rsplit(".", 1)[-1])]


def backend_reaches(paths: dict[str, Path]) -> list[tuple[Path, int, str]]:
    """``x._backend`` (and ``getattr(x, "_backend")``) for any ``x`` but ``self``."""
    found = []
    for module, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "_backend" and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((path, node.lineno, module))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "getattr", "setattr", "hasattr") and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value == "_backend":
                found.append((path, node.lineno, module))
    return found


class TestSeamChecks:
    """The two checks below see what they must (and nothing they must not)."""

    def test_private_imports_are_found(self, tmp_path):
        package = tmp_path / "pkg"
        package.mkdir()
        for name in ("__init__", "a", "_b", "c"):
            (package / f"{name}.py").write_text("")
        (package / "c.py").write_text("from pkg.a import _hidden, shown, __version__\nfrom pkg import _b\n"
                                      "from pkg.a import shown as _alias\n")
        found = imports_of("pkg.c", package / "c.py", {"pkg", "pkg.a", "pkg._b", "pkg.c"})
        private = [imp.imported for imp in found if imp.target != imp.imported
                   and _private_name(imp.imported.rsplit(".", 1)[-1])]
        assert private == ["pkg.a._hidden"]

    def test_backend_reaches_are_found(self, tmp_path):
        path = tmp_path / "m.py"
        path.write_text("job._backend.start()\nself._backend()\nx = getattr(job, '_backend', None)\n"
                        "cls._backend\njob.backend\n")
        assert sorted(line for _, line, _ in backend_reaches({"m": path})) == [1, 3]


def test_only_job_py_touches_a_jobs_backend():
    reaches = backend_reaches(modules())
    problems = [f"{path.relative_to(REPO)}:{line}" for path, line, _ in reaches
                if path != REPO / "jobber" / "_jobs" / "job.py"]
    fail_on(problems,
            "modules outside jobber/_jobs/job.py reach into a Job's backend (job._backend)",
            "Go through the Job's public verbs, or add a function to jobber/_jobs/job.py (as "
            "start_sandboxed, signal, read_log and start_together are) and, if the backend lacks "
            "the verb, to the Backend protocol in jobber/_backends/base.py.")


def test_no_private_names_are_imported_across_modules():
    fail_on(places(private_imports()),
            "private names (a leading underscore) are imported from another module",
            "A name another module needs is part of its module's interface: drop the underscore "
            "(and list it in __all__), or move it to the module that uses it.")


# The Jupyter server extension (jobber_lab) sits beside the magics, above the core: it may use
# the core and the magics' pure presentation (the live view's model, its HTML), never a
# notebook library (it runs in the Jupyter server, not in a kernel); nothing imports it.
LAB_MAY_IMPORT_FROM_MAGICS = frozenset({"jobber_magics", "jobber_magics._viewstate", "jobber_magics._charts",
                                        "jobber_magics._display", "jobber_magics._ticks", "jobber_magics._loglines"})
WIDGET_LIBRARIES = NOTEBOOK_LIBRARIES - {"jobber_magics"} | {"anywidget", "traitlets"}
JUPYTER_SERVER_LIBRARIES = {"jupyter_server", "tornado", "jobber_lab"}


def test_the_lab_extension_uses_the_core_and_the_pure_view_only():
    problems = []
    for imp in all_imports():
        if _in(imp.importer, "jobber_lab"):
            if _top(imp.target) in WIDGET_LIBRARIES or (_in(imp.target, "jobber_magics")
                                                         and imp.target not in LAB_MAY_IMPORT_FROM_MAGICS):
                problems.append(imp)
        elif imp.importer in LAB_MAY_IMPORT_FROM_MAGICS and _top(imp.target) in WIDGET_LIBRARIES:
            problems.append(imp)
        elif _top(imp.target) in JUPYTER_SERVER_LIBRARIES and not _in(imp.importer, "jobber_lab"):
            problems.append(imp)
    fail_on(places(problems),
            "jobber_lab (the Jupyter server extension) may import the core and the magics' pure view "
            f"modules ({', '.join(sorted(LAB_MAY_IMPORT_FROM_MAGICS))}), which import no widget library; "
            "and only jobber_lab imports jupyter_server or tornado; but",
            "Move what both need into a module without IPython, ipywidgets, anywidget or traitlets (as "
            "jobber_magics/_viewstate.py is), and keep the core free of the Jupyter server.")
