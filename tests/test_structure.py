"""The shape of the code: where things live stays true (no import cycles, a leaf config, short functions, no
private names across modules, docs that stay inside the repository)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raykd"
STDLIB_OK = {"__future__", "re", "pathlib", "typing", "hashlib", "json"}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def module_imports(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside a function (a lazy import is still a dependency)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_import_cycles_inside_raykd():
    mods = modules()
    graph = {name: {d for d in module_imports(path) if d in mods and d != name} for name, path in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for other in graph[node]:
            if state.get(other) == 1:
                cycles.append(stack[stack.index(other) :] + [other])
            elif not state.get(other):
                visit(other, stack)
        stack.pop()
        state[node] = 2

    for name in graph:
        if not state.get(name):
            visit(name, [])
    assert cycles == []


def test_lower_layers_never_import_higher_ones():
    """Training never imports the analysis or the study; the analysis never imports the study or the sweep."""
    higher = {
        "raykd.train": ("raykd.analysis", "raykd.study", "raykd.sweep"),
        "raykd.analysis": ("raykd.study", "raykd.sweep"),
        "raykd.tasks": ("raykd.analysis", "raykd.study", "raykd.sweep", "raykd.train"),
    }
    offenders = [
        f"{name} imports {dependency}"
        for name, path in modules().items()
        for layer, forbidden in higher.items()
        if name.startswith(layer)
        for dependency in module_imports(path)
        if dependency.startswith(forbidden)
    ]
    assert offenders == []


def test_raykd_imports_its_own_modules_at_the_top():
    """Lazy imports are for heavy third-party libraries; raykd's own modules are imported where a reader looks
    first."""
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    imported = [a.name for a in inner.names] if isinstance(inner, ast.Import) else []
                    if isinstance(inner, ast.ImportFrom) and inner.module:
                        imported = [inner.module]
                    offenders += [f"{name}:{inner.lineno} {m}" for m in imported if m.split(".")[0] == "raykd"]
    assert offenders == []


def test_config_is_a_leaf():
    imported = {name.split(".")[0] for name in module_imports(PACKAGE / "config.py")}
    assert imported <= STDLIB_OK | {"pydantic", "yaml"}, imported


def test_no_long_functions_without_a_reason():
    """No function over ~60 lines, unless its first lines say why (a comment starting with '# long:')."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                head = source[node.lineno - 1 : node.body[0].lineno + 2]
                if not any(line.strip().startswith("# long:") for line in head):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert offenders == []


def test_no_private_names_imported_across_modules():
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "studies").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raykd"):
                offenders += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert offenders == []


def test_docs_cite_the_paper_and_the_repository_only():
    """Docstrings and comments point at the paper and the repository's own docs, never at files a user of the
    repository does not have."""
    outside = ("PAPER.md", "DESIGN.md", "OFFLINE.md", "STYLE.md", "../shared")
    offenders = [
        f"{path.relative_to(ROOT)}"
        for path in [
            *PACKAGE.rglob("*.py"),
            *(ROOT / "studies").rglob("*"),
            ROOT / "README.md",
            *(ROOT / "docs").glob("*.md"),
        ]
        if path.is_file() and any(name in path.read_text(errors="replace") for name in outside)
    ]
    assert offenders == []
