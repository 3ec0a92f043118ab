"""The package layout holds: no import cycles, dependencies one way (model <- data <- engines <- evaluation <- training
-> hub; visualization beside the model, used by evaluation, training, the Hub card and the commands; the results
schema `msaf_hf.results` read by all; the commands (msaf_hf.commands: the `msaf-hf` subcommands, the scripts' code)
on top of everything), no two layers importing each other, no private name imported across modules nor by the
scripts, no public name defined by two modules, no module over ~600 lines but the modeling file, a light
`import msaf_hf`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "msaf_hf"
COMMANDS = "msaf_hf.commands"
REMOTE_CODE = {"msaf_hf.configuration_dsnet", "msaf_hf.modeling_dsnet", "msaf_hf.image_processing_dsnet"}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(modules: dict[str, tuple[Path, bool]]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """{module: msaf_hf modules it imports (anywhere in its body)}, and (module, source, name) of private names."""
    edges, private = {}, []
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not source.startswith("msaf_hf"):
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    targets.add(target)
                    if alias.name.startswith("_") and not alias.name.endswith("__") and target != name:
                        private.append((name, source, alias.name))
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("msaf_hf")}
        # A package's __init__ re-exporting its own submodules is not a dependency of the package on them.
        edges[name] = {
            t for t in targets if t in modules and t != name and not (is_package and t.startswith(name + "."))
        }
    return edges, private


LAYERS = ("data", "engines", "evaluation", "training", "hub", "visualization")


def _is_command(module: str) -> bool:
    return module == COMMANDS or module.startswith(COMMANDS + ".")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def test_no_import_cycles():
    edges, _ = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in edges[module]:
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in edges:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_dependencies_point_one_way():
    edges, _ = _imports(_modules())
    wrong = []
    for module, targets in edges.items():
        for target in targets:
            source_layer, target_layer = _layer(module), _layer(target)
            if module in REMOTE_CODE and target not in REMOTE_CODE:
                wrong.append((module, target))  # remote code imports only torch, transformers and its siblings
            elif target_layer == "training" and source_layer != "training" and not _is_command(module):
                wrong.append((module, target))  # nothing imports training but the commands (the scripts' code)
            elif _is_command(target) and not _is_command(module) and module != "msaf_hf.__main__":
                wrong.append((module, target))  # the commands are the top: only `python -m msaf_hf` imports them
            elif source_layer == "data" and target_layer in ("engines", "evaluation", "hub", "visualization"):
                wrong.append((module, target))
            elif source_layer == "engines" and target_layer in ("evaluation", "hub", "visualization"):
                wrong.append((module, target))
            elif source_layer == "visualization" and target_layer in ("data", "evaluation", "hub"):
                wrong.append((module, target))  # pictures of results know the results schema (msaf_hf.results) only
            elif source_layer == "evaluation" and target_layer == "hub":
                wrong.append((module, target))
            elif source_layer == "hub" and target_layer in ("data", "evaluation", "training"):
                wrong.append((module, target))  # the Hub reads the results schema (msaf_hf.results) only
    assert wrong == []


def test_no_two_layers_import_each_other():
    """Layers depend one way: no pair of packages (data, engines, evaluation, ...) imports each other, even through
    different modules."""
    edges, _ = _imports(_modules())
    layer_edges = {(_layer(m), _layer(t)) for m, targets in edges.items() for t in targets if _layer(m) != _layer(t)}
    assert sorted((a, b) for a, b in layer_edges if a < b and (b, a) in layer_edges and "top" not in (a, b)) == []


def test_no_private_name_is_imported_across_modules():
    _, private = _imports(_modules())
    assert private == []


def _script_files() -> list[Path]:
    return sorted([*(REPO_ROOT / "scripts").glob("*.py"), *(REPO_ROOT / "docs").glob("*.py")])


def test_scripts_import_no_private_name():
    """The scripts (scripts/, docs/*.py) use msaf_hf's public names only: no `_name`, no `_module` on the path."""
    private = []
    for path in _script_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("msaf_hf"):
                names = [*node.module.split("."), *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [part for alias in node.names if alias.name.startswith("msaf_hf") for part in
                         alias.name.split(".")]
            else:
                continue
            private += [(path.name, name) for name in names if name.startswith("_") and not name.endswith("__")]
    assert _script_files() and private == []


def test_user_scripts_are_thin_wrappers_over_the_commands():
    """A user command's script calls the `msaf-hf` subcommand's `main`: one copy of the code, shipped in the wheel."""
    wrappers = {"train": "train", "evaluate": "evaluate", "export": "export", "predict": "predict",
                "convert_original_checkpoint": "convert", "push_to_hub": "push", "demo": "demo",
                "benchmark": "benchmark", "check_data": "check_data"}
    for script, command in wrappers.items():
        tree = ast.parse((REPO_ROOT / "scripts" / f"{script}.py").read_text(encoding="utf-8"))
        imports = [(n.module, [a.name for a in n.names]) for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert (f"{COMMANDS}.{command}", ["main"]) in imports, script
        assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], script


def test_no_sys_path_fallbacks():
    """The package is installed (README: `make setup` / `pip install -e .`), so nothing edits sys.path to find it."""
    assert [p.name for p in [*_script_files(), *PACKAGE.rglob("*.py")] if "sys.path.insert" in p.read_text()] == []


def test_modules_stay_small():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, (path, _) in _modules().items()}
    assert {name: size for name, size in sizes.items() if size > 600 and name != "msaf_hf.modeling_dsnet"} == {}


@pytest.mark.slow  # a fresh interpreter (about 5 s)
def test_import_msaf_hf_stays_light():
    heavy = ("datasets", "msaf_hf.data", "msaf_hf.training", "msaf_hf.evaluation.evaluator", "msaf_hf.hub")
    code = f"import sys, msaf_hf; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _public_definitions(path: Path) -> set[str]:
    """Public names a module defines at its top level: functions, classes and assigned names (constants)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
    return {name for name in names if not name.startswith("_")}


# Names every module of a kind has by convention: a module's logger, and a command module's entry point and parser.
PER_MODULE_NAMES = {"logger", "main", "build_parser"}


def test_no_two_modules_define_the_same_public_name():
    """One owner for each concept: a public function, class or constant is defined in one module (a package's
    __init__ re-exporting it is not a definition, and __init__ files are skipped)."""
    owners: dict[str, list[str]] = {}
    for name, (path, is_package) in _modules().items():
        if is_package:
            continue
        for defined in _public_definitions(path) - PER_MODULE_NAMES:
            owners.setdefault(defined, []).append(name)
    assert {name: sorted(modules) for name, modules in owners.items() if len(modules) > 1} == {}
