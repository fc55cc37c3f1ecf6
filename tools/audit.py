"""Static audit of a submission's own code: tampering and calls to the reference implementation.

One layer of tamper evidence (the sandbox is another): the code a student wrote or added is
parsed, never run, and each of these is reported with its cell and reason:

- replacing a grader function (``check_*``) or patching a module (``torch.allclose = ...``,
  ``setattr(np, ...)``, anything assigned onto torch / numpy / builtins / saliencylab ...);
- reaching into the interpreter: ``globals()``, ``locals()``, ``vars()``, ``sys.modules``,
  frames (``sys._getframe``, ``inspect.currentframe``/``stack``), ``__builtins__``, ``gc``;
- hiding code from review: ``exec``, ``eval``, ``compile``, ``__import__``, ``importlib``;
- calling, inside an exercise, the library's reference implementation of that very method
  (``saliency`` inside ``saliency_map``).

Honest solutions use none of these; ``tests/test_audit.py`` runs the audit on every solution
and every wrong answer of the course.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

def _reference_implementations() -> dict[str, frozenset[str]]:
    """The library functions each exercise asks students to write themselves, from the table the
    checks' run-time tripwires use (read as a file: importing the library would pull in torch)."""
    spec = importlib.util.find_spec("saliencylab")
    if spec is None or spec.origin is None:
        raise RuntimeError("saliencylab is not installed in this Python: run `make setup`")
    table = json.loads((Path(spec.origin).parent / "checks" / "reference_implementations.json").read_text())
    return {exercise: frozenset(path.split(":")[1].split(".")[0] for path in paths)  # Class.method -> Class
            for exercise, paths in table.items() if not exercise.startswith("_")}


REFERENCE_IMPLEMENTATIONS = _reference_implementations()
PROTECTED_MODULES = frozenset({"torch", "nn", "F", "np", "numpy", "builtins", "math", "saliencylab",
                               "checks", "attribution", "metrics", "sys", "os", "inspect", "nbgrader"})
PROTECTED_ROOTS = frozenset({"__main__", "torch", "numpy", "builtins", "math", "saliencylab", "sys", "os", "inspect",
                             "nbgrader", "functools", "types"})
INTERPRETER_CALLS = frozenset({"globals", "locals", "vars"})
INTERPRETER_ATTRIBUTES = frozenset({"_getframe", "currentframe", "getouterframes", "f_back", "f_globals",
                                    "f_locals", "get_referrers", "get_objects", "__globals__", "__code__",
                                    "__builtins__", "__subclasses__", "__dict__", "__wrapped__",
                                    "setprofile", "settrace", "getprofile", "gettrace"})
HIDDEN_CODE = frozenset({"exec", "eval", "compile", "__import__"})


@dataclass(frozen=True)
class Finding:
    """One suspicious construct: in which cell (its grade_id, or the cell's position) and why;
    ``exercise`` is the exercise cell's grade_id, None for a cell the student added."""

    cell: str
    reason: str
    exercise: str | None = None


def protected_aliases(sources: list[str]) -> frozenset[str]:
    """:data:`PROTECTED_MODULES` plus every name that ``sources`` bind by importing from them
    (``import saliencylab.checks as c``, ``from torch import nn as n``)."""
    names = set(PROTECTED_MODULES)
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.asname or alias.name.split(".")[0] for alias in node.names
                          if alias.name.split(".")[0] in PROTECTED_ROOTS}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROTECTED_ROOTS:
                names |= {alias.asname or alias.name for alias in node.names}
    return frozenset(names)


def audit_source(source: str, exercise: str | None = None,
                 protected: frozenset[str] = PROTECTED_MODULES) -> list[str]:
    """Reasons to flag ``source`` (code a student wrote); ``exercise``: the grade_id of the
    exercise cell it is, whose reference implementation it must not call; ``protected``: the
    names that stand for modules whose attributes must not be assigned."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # it fails when run, and scores 0 there
    protected = protected | protected_aliases([source])
    forbidden = REFERENCE_IMPLEMENTATIONS.get(exercise or "", frozenset())
    defined_here = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined_here |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    reasons: list[str] = []
    for node in ast.walk(tree):
        reasons += _assignment_reasons(node, protected)
        if isinstance(node, ast.Call):
            name = _called_name(node.func)
            if isinstance(node.func, ast.Name) and name in INTERPRETER_CALLS:
                reasons.append(f"reaches into the interpreter ({name}())")
            if name in HIDDEN_CODE or (name == "import_module"):
                reasons.append(f"runs code built at run time ({name}): hides what is executed")
            if name in ("setattr", "delattr", "__setattr__", "__delattr__") and node.args and _root_name(node.args[0]) in protected:
                reasons.append(f"patches {_root_name(node.args[0])} with {name}")
            if name in forbidden and name not in defined_here:
                reasons.append(f"calls the library's reference implementation {name}() inside {exercise}")
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)) and node.id.startswith("check_"):
            reasons.append(f"replaces the grader function {node.id}")
        if isinstance(node, ast.ImportFrom) and node.module != "saliencylab.checks":
            for alias in node.names:
                if (alias.asname or alias.name).startswith("check_"):
                    reasons.append(f"replaces the grader function {alias.asname or alias.name} by an import")
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in forbidden \
                and node.id not in defined_here and id(node) not in called:
            reasons.append(f"uses the library's reference implementation {node.id} inside {exercise}")
        if isinstance(node, ast.Name) and node.id == "__builtins__":
            reasons.append("reaches into the interpreter (__builtins__)")
        if isinstance(node, ast.Attribute):
            if node.attr in INTERPRETER_ATTRIBUTES or (node.attr == "stack" and _root_name(node) == "inspect"):
                reasons.append(f"reaches into the interpreter ({node.attr})")
            if node.attr == "modules" and _root_name(node) == "sys":
                reasons.append("reaches into sys.modules")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(m.split(".")[0] in {"builtins", "gc", "importlib", "ctypes"} for m in modules):
                reasons.append(f"imports {', '.join(sorted(set(modules)))}: not needed by any exercise")
    return sorted(set(reasons))


def _assignment_reasons(node: ast.AST, protected: frozenset[str]) -> list[str]:
    targets: list[ast.AST] = []
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target])
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("check_"):
        return [f"redefines the grader function {node.name}"]
    reasons = []
    for target in targets:
        for element in ast.walk(target):
            if isinstance(element, ast.Name) and element.id.startswith("check_"):
                reasons.append(f"replaces the grader function {element.id}")
            if isinstance(element, ast.Attribute) and _root_name(element) in protected:
                reasons.append(f"patches {ast.unparse(element)}")
    return reasons


def _called_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def audit_notebook(submission: nbformat.NotebookNode, source: nbformat.NotebookNode) -> list[Finding]:
    """Audit every code cell the student could write: the exercises and any cell they added
    (locked cells are replaced by the source's at grading, so they are not theirs)."""
    locked = {c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells
              if c.metadata.get("nbgrader", {}).get("locked")}
    original = {c.source for c in source.cells if c.cell_type == "code"}
    protected = protected_aliases([c.source for c in submission.cells if c.cell_type == "code"])
    findings = []
    for index, cell in enumerate(submission.cells):
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if cell.cell_type != "code" or grade_id in locked or (not meta.get("solution") and cell.source in original):
            continue
        exercise = grade_id if meta.get("solution") else None
        for reason in audit_source(cell.source, exercise, protected):
            findings.append(Finding(grade_id or f"cell {index}", reason, exercise))
    return findings
