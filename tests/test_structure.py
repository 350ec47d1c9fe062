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


HEAVY = {"torch", "transformers", "datasets", "evaluate", "sklearn", "ray", "mlflow", "matplotlib", "statsmodels"}


def top_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return out


def heavy_modules() -> set[str]:
    """raykd modules whose import loads a heavy library (torch, transformers, Ray, MLflow, ...), through any chain of
    module-level imports, a package's __init__ included."""
    mods = modules()
    deps = {name: top_level_imports(path) for name, path in mods.items()}
    for name in deps:  # importing a.b.c runs a and a.b first
        deps[name] |= {".".join(d.split(".")[:i]) for d in set(deps[name]) for i in range(1, d.count(".") + 1)}
        deps[name] |= {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    heavy = {n for n, d in deps.items() if any(x.split(".")[0] in HEAVY for x in d)}
    grew = True
    while grew:
        grown = {n for n, d in deps.items() if d & heavy} - heavy
        heavy |= grown
        grew = bool(grown)
    return heavy


def test_raykd_modules_are_imported_lazily_only_to_keep_a_light_module_light():
    """A raykd module is imported inside a function only where that keeps the importing module free of heavy
    libraries (the study driver answers bad input and --dry-run without torch); everywhere else at the top, where a
    reader looks first."""
    heavy, offenders = heavy_modules(), []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                found = [a.name for a in inner.names] if isinstance(inner, ast.Import) else []
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found = [inner.module] + [f"{inner.module}.{a.name}" for a in inner.names]
                found = [m for m in found if m.split(".")[0] == "raykd"]
                if found and (name in heavy or not set(found) & heavy):
                    offenders.append(f"{name}:{inner.lineno} {found[0]}")
    assert offenders == []


def test_the_driver_side_modules_stay_light():
    """What the study driver, --dry-run and the preflight import before any trial runs loads no heavy library."""
    assert heavy_modules().isdisjoint({"raykd.study", "raykd.plan", "raykd.validate", "raykd.sweep", "raykd.config"})


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
