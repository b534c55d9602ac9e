"""scripts/lib.sh: the check() both container scripts count their checks with."""
from __future__ import annotations

import subprocess

from tests.server import ROOT


def test_check_counts_and_shows_a_failures_output():
    script = r'''
        NAME=t; passed=0; failed=0; CHECK_TAIL=2
        . scripts/lib.sh
        check "fine" true
        check "broken" sh -c 'echo one; echo two; echo three; exit 3'
        echo "$passed passed, $failed failed"
    '''
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=10).stdout.splitlines()
    assert out == ["t: PASS  fine", "t: FAIL  broken", "      two", "      three",
                   "1 passed, 1 failed"], out


def test_both_scripts_use_it():
    for name in ("container.sh", "systemd-container.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert ". scripts/lib.sh" in text and "check() {" not in text, name
