"""Ctrl-C is never lost: an interrupt that lands where Python ignores exceptions (an
at-fork hook runs Python code each time a subprocess starts) is delivered again."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import signal, sys, time
from cinema_cli.cli import app
signal.signal(signal.SIGINT, app._interrupted)
sys.unraisablehook = app._redeliver_lost_interrupt
class Ignored:
    def __del__(self):  # Python ignores what a finalizer raises, as it does in an at-fork hook
        raise app.Interrupted
try:
    Ignored()
    time.sleep(5)
    print("lost")
except app.Interrupted:
    print("delivered again")
"""


def test_an_interrupt_python_ignored_is_delivered_again():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "delivered again", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
