"""`make grade` survives bad submissions without losing anyone's marks.

A tiny two-exercise assignment is graded for one well-behaved student and one student per kind
of trouble; each ends graded or clearly flagged, and the good student's grade is intact.
"""

from __future__ import annotations

import csv
import html
import re
import shutil
import socket
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import grade  # noqa: E402
import nbtools  # noqa: E402

ASSIGNMENT = "robust"
CORRECT = "    ### BEGIN SOLUTION\n    return 2 * v\n    ### END SOLUTION"
pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("grade-robustness")]


def notebook(double_body: str = CORRECT, extra_cell: str | None = None) -> nbformat.NotebookNode:
    cells = [
        nbtools.markdown("# A tiny assignment"),
        nbtools.solution("def double(v):\n" + double_body, "double"),
        nbtools.tests("assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(3) == 6\n### END HIDDEN TESTS",
                      "double_test", 2),
        nbtools.solution("def triple(v):\n    ### BEGIN SOLUTION\n    return 3 * v\n    ### END SOLUTION", "triple"),
        nbtools.tests("assert triple(2) == 6", "triple_test", 1),
        nbtools.markdown("Why?"),
        nbtools.written_answer("why", 1, "Because."),
    ]
    if extra_cell:
        cells.insert(3, nbtools.code(extra_cell))
    return nbtools.new_notebook(cells, ASSIGNMENT)


def without_cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != grade_id]
    return nb


def with_edited_test(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "double_test")
    test.source = "pass  # tests removed by the student"
    return nb


VANDAL = """import os
start = os.getcwd()
for up in range(8):  # walk up from the working folder and spoil every notebook and database found
    folder = os.path.abspath(os.path.join(start, *[".."] * up))
    for base, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".ipynb", ".db", ".csv", ".html", ".py")):
                try:
                    with open(os.path.join(base, name), "w") as file:
                        file.write("vandalised")
                except OSError:
                    pass
"""
SPY = """import glob, os
found = [p for up in range(8) for p in glob.glob(os.path.join(os.getcwd(), *[".."] * up, "solutions", "*", "*.ipynb"))]
for path in found:
    print(open(path).read())
print("solutions found:", len(found))
"""
FORK_BOMB = """import os
try:
    while True:
        if os.fork() == 0:
            import time
            time.sleep(30)
            os._exit(0)
except OSError as error:
    print("fork refused:", type(error).__name__)
"""
MEMORY_HOG = """try:
    hog = bytearray(64 * 2**30)
except MemoryError:
    print("64 GB refused")
"""
NETWORK = """import socket
s = socket.socket()
s.settimeout(2)
print("connect:", s.connect_ex(("127.0.0.1", PORT)))
"""

GRADEBOOK_CORRUPTER = """import os, sqlite3
for up in range(6):  # every database above the working folder: the gradebook, if it were there
    folder = os.path.abspath(os.path.join(os.getcwd(), *[".."] * up))
    for base, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".db"):
                try:
                    with sqlite3.connect(os.path.join(base, name)) as db:
                        db.execute("update grade set auto_score = 100, manual_score = 100")
                    print("changed", name)
                except Exception as error:
                    print("refused", name, type(error).__name__)
"""
SLEEPER = "import time\ntime.sleep(10**6)"
FLOOD = "chunk = 'x' * 2**20\nwhile True:  # a megabyte per line, until the cell's time is up\n    print(chunk)"

# Graded only inside the sandbox: without it, the vandal would spoil this machine's files.
HOSTILE = {
    "aaa_vandal": notebook(extra_cell=VANDAL),
    "zzz_vandal": notebook(extra_cell=VANDAL),
    "spy": notebook(extra_cell=SPY),
    "fork_bomb": notebook(extra_cell=FORK_BOMB),
    "memory_hog": notebook(extra_cell=MEMORY_HOG),
    "gradebook_corrupter": notebook(extra_cell=GRADEBOOK_CORRUPTER),
} if grade.SANDBOX_OFF_REASON is None else {}

SUBMISSIONS = {
    **HOSTILE,
    "good": notebook(),
    "patches_builtins": notebook(extra_cell="import builtins\nbuiltins.abs = lambda x: 0"),
    "replaces_a_check": notebook("    ### BEGIN SOLUTION\n    return 2 * v\n    ### END SOLUTION\n\n\n"
                                 "def check_double(fn):\n    return None"),
    "raises": notebook("    raise ValueError('not done')"),
    "infinite_loop": notebook(extra_cell="while True:\n    pass"),
    "kernel_crash": notebook(extra_cell="import os\nos._exit(1)"),
    "huge_output": notebook(extra_cell="for i in range(100000):\n    print('spam', i)"),
    "sleeps_forever": notebook(extra_cell=SLEEPER),
    "prints_gigabytes": notebook(extra_cell=FLOOD),
    "edited_test_wrong": with_edited_test(notebook("    return 0")),
    "deleted_test_right": without_cell(notebook(), "double_test"),
    "deleted_test_wrong": without_cell(notebook("    return 0"), "double_test"),
}


SUBMITTED_BEFORE: dict[Path, dict[str, bytes]] = {}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    nbtools.write(notebook(), root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    for student, nb in SUBMISSIONS.items():
        nbtools.write(nb, root / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    (root / "submitted" / "no_notebook" / ASSIGNMENT).mkdir(parents=True)
    broken = root / "submitted" / "not_json" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"cells": [ this is not json')
    server = socket.socket()  # a port on the host's loopback that student code must not reach
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    network = notebook(extra_cell=NETWORK.replace("PORT", str(server.getsockname()[1])))
    if HOSTILE:
        nbtools.write(network, root / "submitted" / "network" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    SUBMITTED_BEFORE[root] = snapshot(root / "submitted")
    try:
        results = {r.student: r for r in grade.grade_all(root, "--Execute.timeout=5")}
    finally:
        server.close()
    rows = grade.write_csv(list(results.values()), grade.cell_scores(root), root / "grades.csv")
    with open(root / "grades.csv") as file:
        table = {row["student"]: row for row in csv.DictReader(file)}
    return root, results, table, rows


def score(table, student):
    return float(table[student]["score"]), float(table[student]["max_score"])


def test_good_student_gets_full_autograded_marks(graded):
    _, results, table, _ = graded
    assert results["good"].graded
    assert score(table, "good") == (3.0, 4.0)  # the written answer (1 point) is graded by hand
    assert table["good"]["cells_to_grade_by_hand"] == "1"


def test_a_cell_that_raises_costs_only_its_exercise(graded):
    _, results, table, _ = graded
    assert results["raises"].graded and score(table, "raises") == (1.0, 4.0)


def test_an_infinite_loop_is_stopped_and_the_rest_graded(graded):
    _, results, table, _ = graded
    assert results["infinite_loop"].graded and score(table, "infinite_loop") == (3.0, 4.0)


def test_a_kernel_crash_is_flagged_not_fatal(graded):
    _, results, table, _ = graded
    crash = results["kernel_crash"]
    assert not crash.graded and "kernel died" in crash.detail
    assert table["kernel_crash"]["status"] == "not graded" and score(table, "kernel_crash") == (0.0, 4.0)


def test_sleeping_forever_is_stopped_and_the_rest_graded(graded):
    _, results, table, _ = graded
    assert results["sleeps_forever"].graded and score(table, "sleeps_forever") == (3.0, 4.0)


def test_printing_gigabytes_ends_graded_or_flagged(graded):
    root, results, table, _ = graded
    flood = results["prints_gigabytes"]
    assert flood.graded or flood.status == "not graded", flood
    if flood.graded:
        assert score(table, "prints_gigabytes") == (3.0, 4.0)
        executed = root / "autograded" / "prints_gigabytes" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert executed.stat().st_size < 50_000_000


def test_huge_output_is_graded_and_truncated(graded):
    root, results, table, _ = graded
    assert results["huge_output"].graded and score(table, "huge_output") == (3.0, 4.0)
    autograded = root / "autograded" / "huge_output" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert autograded.stat().st_size < 2_000_000


def test_edited_tests_are_replaced_by_the_source_tests(graded):
    _, results, table, _ = graded
    assert results["edited_test_wrong"].graded and score(table, "edited_test_wrong") == (1.0, 4.0)


def test_deleted_tests_are_restored_and_run(graded):
    root, results, table, _ = graded
    assert score(table, "deleted_test_right") == (3.0, 4.0)
    assert score(table, "deleted_test_wrong") == (1.0, 4.0)
    assert "double_test" in results["deleted_test_right"].detail


def test_the_grader_never_changes_submitted(graded):
    root, _, _, _ = graded
    assert snapshot(root / "submitted") == SUBMITTED_BEFORE[root]


def test_missing_and_invalid_notebooks_are_flagged(graded):
    _, results, table, _ = graded
    assert results["no_notebook"].status == "missing notebook"
    assert results["not_json"].status == "invalid notebook" and "not a valid notebook" in results["not_json"].detail
    assert score(table, "no_notebook") == (0.0, 4.0) and score(table, "not_json") == (0.0, 4.0)


def test_every_student_has_a_row_and_feedback_when_graded(graded):
    root, results, table, _ = graded
    assert set(table) == set(SUBMISSIONS) | {"no_notebook", "not_json"} | ({"network"} if HOSTILE else set())
    for student, result in results.items():
        if result.graded:
            assert (root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").exists(), student


# --- hostile submissions: each is graded or flagged, and costs no one else anything ---------


def executed_outputs(root: Path, student: str) -> str:
    path = root / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    cells = nbformat.read(str(path), as_version=4).cells
    return "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.skipif(grade.SANDBOX_OFF_REASON is not None, reason="needs the sandbox")
@pytest.mark.parametrize("student", ["aaa_vandal", "zzz_vandal"])
def test_a_vandal_sorted_first_or_last_spoils_nothing_of_anyone(graded, student):
    root, results, table, _ = graded
    assert results[student].graded and score(table, student) == (3.0, 4.0)
    assert score(table, "good") == (3.0, 4.0)
    assert nbformat.read(str(root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), as_version=4).cells
    assert snapshot(root / "submitted") == SUBMITTED_BEFORE[root]
    for other in results:
        if results[other].graded:
            executed = root / "autograded" / other / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            assert "vandalised" not in executed.read_text()[:100], other


@pytest.mark.skipif(grade.SANDBOX_OFF_REASON is not None, reason="needs the sandbox")
def test_a_spy_finds_no_solutions(graded):
    root, results, table, _ = graded
    assert results["spy"].graded and score(table, "spy") == (3.0, 4.0)
    outputs = executed_outputs(root, "spy")
    assert "solutions found: 0" in outputs and "HIDDEN TESTS" not in outputs


@pytest.mark.skipif(grade.SANDBOX_OFF_REASON is not None, reason="needs the sandbox")
def test_the_gradebook_is_out_of_reach(graded):
    root, results, table, _ = graded
    assert results["gradebook_corrupter"].graded and score(table, "gradebook_corrupter") == (3.0, 4.0)
    assert "changed gradebook" not in executed_outputs(root, "gradebook_corrupter")
    assert score(table, "good") == (3.0, 4.0) and score(table, "raises") == (1.0, 4.0)


def test_fork_bombs_memory_hogs_and_network_calls_are_contained(graded):
    root, results, table, _ = graded
    assert "fork refused: BlockingIOError" in executed_outputs(root, "fork_bomb")
    assert "64 GB refused" in executed_outputs(root, "memory_hog")
    assert "connect: 0" not in executed_outputs(root, "network")
    for student in ("fork_bomb", "memory_hog", "network"):
        assert results[student].graded and score(table, student) == (3.0, 4.0), student


def feedback_text(root: Path, student: str) -> str:
    """The feedback page's text, without its HTML tags (code is split into highlighted spans)."""
    page = (root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_feedback_shows_results_and_messages_but_never_the_hidden_tests(graded):
    root, results, _, _ = graded
    for student, result in results.items():
        if not result.graded:
            continue
        html = feedback_text(root, student)
        assert "double(3)" not in html and "BEGIN HIDDEN TESTS" not in html, student
        assert "assert double(2) == 4" in html  # the visible test stays
    wrong = feedback_text(root, "edited_test_wrong")
    assert "AssertionError" in wrong and "hidden tests: their code is not shown" in wrong


def test_tampering_is_flagged_with_its_reason_and_loses_the_automatic_points(graded):
    _, results, table, _ = graded
    patched = results["patches_builtins"]
    assert patched.status == "tampering" and "builtins" in patched.detail
    assert table["patches_builtins"]["status"] == "tampering"
    assert score(table, "patches_builtins") == (0.0, 4.0)  # a cell they added: every autograded cell
    replaced = results["replaces_a_check"]
    assert replaced.status == "tampering" and "check_double" in replaced.detail
    assert score(table, "replaces_a_check") == (1.0, 4.0)  # its exercise only; triple keeps its point
    assert results["good"].status == "graded"


# --- what the run reveals --------------------------------------------------------------------


def executed_test_cell(source: str, outputs: list) -> nbformat.NotebookNode:
    notebook = nbtools.new_notebook([nbtools.solution("def f(x):\n    return x", "f"),
                                     nbtools.tests(source, "f_test", 1)], ASSIGNMENT)
    test_cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "f_test")
    test_cell.outputs = [nbformat.from_dict(output) for output in outputs]
    return notebook


def test_a_check_that_prints_no_verdict_is_flagged():
    silent = executed_test_cell("check_f(f)", [])
    findings = grade.runtime_findings(silent)
    assert [(f.cell, f.exercise) for f in findings] == [("f_test", "f")] and "without printing a verdict" in findings[0].reason
    honest = executed_test_cell("check_f(f)", [{"output_type": "stream", "name": "stdout", "text": "✓ check_f passed: 3 cases\n"}])
    assert grade.runtime_findings(honest) == []
    ticked = executed_test_cell("check_f(f)", [{"output_type": "stream", "name": "stdout", "text": "✓ looks fine\n"}])
    assert grade.runtime_findings(ticked), "a tick that is not a check's success line is no verdict"


def test_a_tampering_error_in_a_test_cell_is_flagged():
    error = {"output_type": "error", "ename": "ReferenceImplementationCalled", "evalue": "f called ...", "traceback": []}
    findings = grade.runtime_findings(executed_test_cell("check_f(f)", [error]))
    assert [(f.cell, f.exercise) for f in findings] == [("f_test", "f")]
    plain_failure = {**error, "ename": "CheckFailed"}
    assert grade.runtime_findings(executed_test_cell("check_f(f)", [plain_failure])) == []
