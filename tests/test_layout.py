"""The layout's fences (docs/design: kd_core/ui is the only package that imports gradio; every file under ~400
lines): importing every other module of kd_core leaves gradio unloaded, and no source file is over 400 lines."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
# every module of kd_core but the UI's, by its dotted name (__main__ included: the CLI imports no gradio either)
CORE_MODULES = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                      for path in (ROOT / "kd_core").rglob("*.py") if path.relative_to(ROOT).parts[1] != "ui")
IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(name for name in sys.modules if name.split(".")[0] == "gradio")[:5])
"""


def imported_gradio(*modules: str) -> list[str]:
    """The first gradio modules loaded after importing `modules` in a fresh interpreter (none: [])."""
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, *modules], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_no_module_outside_kd_core_ui_imports_gradio():
    assert "kd_core.engine.loop" in CORE_MODULES and not any(name.startswith("kd_core.ui") for name in CORE_MODULES)
    assert imported_gradio(*CORE_MODULES) == []


def test_the_fence_sees_gradio_when_the_ui_is_imported():
    """The same check on kd_core.ui finds gradio (so it would on any module that imports it)."""
    assert "gradio" in imported_gradio("kd_core.ui")


def source_files() -> list:
    paths = [ROOT / "app.py", *sorted((ROOT / "kd_core").rglob("*.py"))]
    return [pytest.param(path, id=str(path.relative_to(ROOT))) for path in paths]


@pytest.mark.parametrize("source", source_files())
def test_no_source_file_is_over_400_lines(source):
    lines = len(source.read_text().splitlines())
    assert lines <= MAX_LINES, f"{source.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


# the layers, lowest first: a module imports from its own layer or a lower one, never a higher one (data flows one
# way: request -> run -> serve -> engine events -> views -> ui / CLI); kd_core's package face imports nothing. The
# zoo's architectures sit below the config, which checks a student's name against them; the weights' downloads
# below the zoo, whose --pretrained ResNets fetch through them
LAYERS = ["models.weights", "models.external", "models.zoo", "config", "losses", "data", "models", "teacher", "run",
          "engine", "publish", "serve", "study", "views", "cli", "__main__", "ui"]


def layer_of(module: str) -> int:
    """The layer of `kd_core.<module>`: its longest prefix in LAYERS."""
    name = module.removeprefix("kd_core.")
    return max((len(layer), i) for i, layer in enumerate(LAYERS) if name == layer or name.startswith(layer + "."))[1]


def kd_core_imports(path: Path) -> set[str]:
    """Every kd_core module `path` imports, at any depth of the file (deferred imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd_core."):
            folder = ROOT / node.module.replace(".", "/")
            submodules = {alias.name for alias in node.names if (folder / f"{alias.name}.py").is_file()}
            found.update(f"{node.module}.{name}" for name in submodules)
            if len(submodules) < len(node.names):  # names the module (or a package's face) defines
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "kd_core":
            found.update(f"kd_core.{alias.name}" for alias in node.names)
    return found


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in (ROOT / "kd_core").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module == "kd_core.__init__":
            continue
        upward += [f"{module} -> {target}" for target in kd_core_imports(path) if layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_import_cycle():
    graph = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): kd_core_imports(p)
             for p in (ROOT / "kd_core").rglob("*.py")}
    state: dict[str, str] = {}

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target == module or target not in graph:
                continue
            if state.get(target) == "open":
                return [*trail, module, target]
            if target not in state and (found := cycle_from(target, [*trail, module])):
                return found
        state[module] = "done"
        return None

    cycles = [found for module in sorted(graph) if module not in state and (found := cycle_from(module, []))]
    assert cycles == []
