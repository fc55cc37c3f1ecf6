"""The grading sandbox holds: a kernel started from its kernel spec runs student code that
cannot read the solutions, write outside its folder, reach the network, fork without bound or
take all the memory, and still imports torch and saliencylab."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402

REASON = sandbox.unavailable_reason()
pytestmark = pytest.mark.xdist_group("sandbox")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap is Linux-only")
def test_the_sandbox_is_on_where_the_course_is_tested():
    # `make setup` installs bubblewrap where it is root; CI must never skip the tests below.
    assert REASON is None or not os.environ.get("CI"), REASON


class SandboxedKernel:
    def __init__(self, scratch: Path, limits: sandbox.Limits):
        from jupyter_client.manager import KernelManager

        self.workdir, runtime = scratch / "work", scratch / "runtime"
        for folder in (self.workdir, runtime):
            folder.mkdir()
        sandbox.write_kernel_spec(scratch / "jupyter" / "kernels", limits)
        os.environ["JUPYTER_PATH"] = str(scratch / "jupyter")
        try:
            self.manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(runtime / "kernel"),
                                         connection_file=str(runtime / "kernel.json"))
            assert "sandbox.py" in " ".join(self.manager.kernel_spec.argv)
        finally:
            del os.environ["JUPYTER_PATH"]
        self.manager.start_kernel(cwd=str(self.workdir))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, source: str) -> str:
        """stdout of ``source``, or 'ERROR Name: value'."""
        printed: list[str] = []

        def keep(message):
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])

        reply = self.client.execute_interactive(source, timeout=120, output_hook=keep)
        content = reply["content"]
        if content["status"] != "ok":
            return f"ERROR {content.get('ename')}: {content.get('evalue')}"
        return "".join(printed).strip()

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    if REASON is not None:
        pytest.skip(f"no sandbox here: {REASON}")
    started = SandboxedKernel(tmp_path_factory.mktemp("sandbox"), sandbox.Limits(memory_gb=6, processes=32))
    yield started
    started.close()


def test_student_code_runs_with_the_course_library(kernel):
    assert kernel.run("import torch, saliencylab, os; print(os.getuid(), torch.ones(2).sum().item())") == \
        f"{sandbox.SANDBOX_UID} 2.0"


def test_the_course_outside_the_library_is_invisible(kernel):
    # solutions/, other submissions, the gradebook: none of it exists in the sandbox.
    for path in [ROOT / "solutions", ROOT / "submitted", ROOT / "nbgrader_config.py", ROOT / "tests"]:
        assert kernel.run(f"import os; print(os.path.exists({str(path)!r}))") == "False", path
    listing = kernel.run(f"import os; print(sorted(os.listdir({str(ROOT)!r})))")
    assert "solutions" not in listing and "tests" not in listing


def test_only_its_own_folder_is_writable(kernel):
    assert kernel.run("open('note.txt', 'w').write('mine'); print(open('note.txt').read())") == "mine"
    assert (kernel.workdir / "note.txt").read_text() == "mine"
    assert kernel.run("import tempfile\nwith tempfile.NamedTemporaryFile() as f: print(f.name.startswith('/tmp/'))") == "True"
    for target in [ROOT / "lib" / "saliencylab" / "evil.py", Path(sys.prefix) / "evil.pth", Path("/etc/evil")]:
        result = kernel.run(f"open({str(target)!r}, 'w').write('x')")
        assert result.startswith("ERROR") and ("Read-only" in result or "Permission" in result), result
        assert not target.exists()


def test_no_network_not_even_the_hosts_loopback(kernel):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        result = kernel.run(f"import socket; s = socket.socket(); s.settimeout(2); print(s.connect_ex(('127.0.0.1', {port})))")
        assert result != "0", "the sandbox reached a port outside it"
    finally:
        server.close()


def test_processes_are_private_and_bounded(kernel):
    assert int(kernel.run("import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]))")) < 10
    forked = kernel.run(
        "import os, time\n"
        "children = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(3); os._exit(0)\n"
        "        children.append(pid)\n"
        "except OSError as error:\n"
        "    print(len(children), type(error).__name__)\n"
        "for pid in children: os.waitpid(pid, 0)"
    )
    count, error = forked.split()
    assert int(count) < 32 and error == "BlockingIOError"


def test_memory_is_bounded(kernel):
    result = kernel.run("import torch\ntry:\n    torch.empty(20 * 2**30, dtype=torch.uint8)\nexcept RuntimeError as e:\n    print('refused')")
    assert result == "refused"
    assert kernel.run("print(1 + 1)") == "2"  # the kernel survives its failed allocation
