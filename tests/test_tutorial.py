"""docs/tutorial.md, run: every fenced block, in order, in one bash session, against real
servers the tutorial itself starts.

How blocks are run (their info strings):

* ``sh``: appended to the script as it is;
* ``sh server``: run in the background (its output to ``server-N.log``); the script goes on
  once the server printed ``listening on`` (the reader uses a second terminal);
* ``sh install``: run as it is under ``CI=true`` (or ``MAXAGE_TEST_TUTORIAL_INSTALL=1``): a
  fresh venv and ``pip install`` of this checkout's two distributions. Elsewhere, to stay
  fast, its ``python3 -m venv`` and ``pip install`` are no-ops and the venv's ``activate``
  puts this test's own environment on the PATH (the packaging tests cover the install);
* ``toml file=NAME`` / ``python file=NAME``: written to ``~/blog/NAME`` (the reader saves it).

The tutorial's ``$HOME`` is a temporary directory, ``8080`` and ``8081`` become free ports
and ``/path/to/maxage`` this checkout. The script stops at the first failing command
(``set -euo pipefail``); what the tutorial says a step shows is checked in its output.
Every process the script started is killed with its process group at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocks(text: str) -> list[tuple[str, str, str, int]]:
    """(language, info, body, line) of every fenced block."""
    return [
        (m.group(1), m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def script(text: str, home: Path, *, install: bool) -> str:
    out = ["set -euo pipefail", f"cd {home}"]
    servers = 0
    for lang, info, body, line in blocks(text):
        out.append(f"echo '### docs/tutorial.md line {line}' >&2")
        if lang in ("toml", "python") and info.startswith("file="):
            name = info.removeprefix("file=")
            out.append(
                f"mkdir -p ~/blog && cat > ~/blog/{name} <<'TUTORIAL_EOF'\n{body}TUTORIAL_EOF"
            )
        elif lang == "sh" and info == "server":
            log = f"{home}/server-{servers}.log"
            servers += 1
            out.append(f"( {body} ) > {log} 2>&1 &")
            out.append(
                f"for _ in $(seq 600); do grep -q '^listening on' {log} && break; sleep 0.05; done; "
                f"grep -q '^listening on' {log} || {{ cat {log} >&2; exit 1; }}"
            )
        elif lang == "sh" and info == "install" and not install:
            body = body.replace("python3 -m venv", ": python3 -m venv")
            out.append(body.replace("pip install", ": pip install"))
        elif lang == "sh":
            out.append(body)
        else:
            raise AssertionError(f"line {line}: a ```{lang} {info}``` block the test cannot run")
    return "\n".join(out) + "\n"


def test_every_command_of_the_tutorial_runs(tmp_path: Path) -> None:
    text = TUTORIAL.read_text()
    port, scratch = free_port(), free_port()
    text = text.replace("8080", str(port)).replace("8081", str(scratch))
    text = text.replace("/path/to/maxage", str(ROOT))
    install = (
        os.environ.get("CI") == "true" or os.environ.get("MAXAGE_TEST_TUTORIAL_INSTALL") == "1"
    )
    home = tmp_path / "home"
    home.mkdir()
    if not install:  # the venv the tutorial activates is this test's own
        activate = home / "blog-venv" / "bin" / "activate"
        activate.parent.mkdir(parents=True)
        activate.write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_") and k != "VIRTUAL_ENV"
    }
    env["HOME"] = str(home)
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))  # the warm one
    (tmp_path / "tutorial.sh").write_text(script(text, home, install=install))
    proc = subprocess.Popen(["bash", str(tmp_path / "tutorial.sh")], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the servers the tutorial started
            os.killpg(proc.pid, signal.SIGTERM)
        proc.kill()
        proc.wait()
    (tmp_path / "stdout.txt").write_text(stdout)  # kept for a look after a failure
    where = [ln for ln in stderr.splitlines() if ln.startswith("### ")]
    assert proc.returncode == 0, f"failed after {where[-1:]}:\n{stderr[-3000:]}\n{stdout[-3000:]}"
    # What the tutorial says the steps show:
    assert "maxage 0." in stdout  # maxage --version
    assert '"code":"validation_failed"' in stdout  # the refused comment
    reads = stdout.lower().split("cache-status: ")[1:4]  # the comment twice, then the post
    first, second, post = (r.split("\n")[0] for r in reads)
    assert (first, post) == ("maxage; fwd=miss; stored", "maxage; hit; detail=l1")
    # A hit, unless this loaded machine held the tailer back past the comments' 2 s bound:
    # then the read rightly bypassed the cache (the contract, not the tutorial, decides).
    assert second in ("maxage; hit; detail=l1", "maxage; fwd=bypass; detail=lagging")
    assert '"consistency":"strong"' in stdout and '"consistency":"session"' in stdout
    assert "\n428\n200\n412\n" in stdout  # the conditional update
    assert stdout.count('{"data":[') == 2 and '"total":4' in stdout  # two pages of four
    assert "refused: validation_failed [('/text'" in stdout
    assert re.search(r"^deleted \S+ at version 2$", stdout, re.M)
    assert "3 session ['news', 'welcome']" in stdout  # the second process read its writes
    assert "verdict: OK" in stdout
    assert (home / "blog" / "check.html").read_text().count("<svg") >= 1  # the report's charts
