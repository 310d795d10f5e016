"""The README's Linux walkthrough, run as written (as root), with the figures checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from tests.dataplane.conftest import require_iperf3
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def blocks() -> tuple[str, str]:
    section = (ROOT / "README.md").read_text().split("## Real traffic shaping (Linux)", 1)[1]
    found = re.findall(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(found) == 2, "terminal 1 and terminal 2"
    return found[0], found[1]


def test_readme_linux_walkthrough(prefix: str, tmp_path: Path) -> None:
    require_iperf3()
    port = str(free_port())
    edits = {
        "IOD_DATA_DIR=.iod-linux": (
            f"IOD_DATA_DIR={tmp_path / 'data'} IOD_LINUX_NAME_PREFIX={prefix}"
        ),
        "8081": port,
        '"iod-': f'"{prefix}-',
        "/tmp/iod-": f"{tmp_path}/iod-",
    }
    scripts = []
    for block in blocks():
        for old, new in edits.items():
            block = block.replace(old, new)
        scripts.append(block)
    server_script, steps = scripts
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", server_script],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        ready = f"until curl -sf http://127.0.0.1:{port}/readyz >/dev/null; do sleep 0.2; done"
        subprocess.run(["bash", "-c", ready], timeout=60, check=True)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", steps],
            cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    receiver = [float(m) for m in re.findall(r"([\d.]+) Mbits/sec\s+receiver", out)]
    print("\nreceiver goodput (Mbps):", receiver)
    down, up, slower, resumed = receiver
    assert 90 <= down <= 100 and 90 <= up <= 100
    assert 18 <= slower <= 20 and 18 <= resumed <= 20
    assert "blocked" in out and "unable to connect" in result.stderr
    assert "nothing left of con_" in out
    assert "0 created, 0 removed, 0 corrected" in out
