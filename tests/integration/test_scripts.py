"""README's Python example, saved as a script without ``if __name__ == "__main__":``, runs on
both backends (the local backend's spawned processes must not run the user's script again)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: a simulated MOENCH detector, at the script's top level too, triggered (like a real one by
#: the beamline's sequencer) each time an acquisition has started
PRELUDE = textwrap.dedent("""
    import threading
    from actors.pipeline import PipelineBase
    from actors.sim.simulator import Simulator, SimulatorSettings

    _sim = Simulator(SimulatorSettings(frames=60, lossless=True, seed=1,
                                       scene={"rows": 48, "cols": 64}))
    _sim.bind()
    _starts = threading.Semaphore(0)
    _start = PipelineBase.start_acquisition

    def _start_and_trigger(self):
        number = _start(self)
        _starts.release()
        return number

    PipelineBase.start_acquisition = _start_and_trigger

    def _detector():  # one series per acquisition started (the dark run, then the data)
        while _starts.acquire(timeout=120):
            if _sim.sent:
                _sim.restart()
            _sim.run()

    threading.Thread(target=_detector, name="detector", daemon=True).start()
""")


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "with Pipeline(config) as pipe:" in b)
    return example


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.ray), "local"])
def test_readme_example_runs_as_a_script_without_a_main_guard(backend: str,
                                                             tmp_path: Path) -> None:
    example = readme_example()
    assert "tcp://127.0.0.1:30001" in example and '"tango": {"enabled": False}' in example
    code = example.replace('"tcp://127.0.0.1:30001"', "_sim.endpoint").replace(
        '"tango": {"enabled": False}',
        f'"tango": {{"enabled": False}}, "backend": "{backend}", "workers": 1, '
        '"ray": {"num_cpus": 2, "object_store_memory": 200_000_000, "worker_cpus": 0.5}')
    code += '\nprint("PROCESSED", result.ledger["processed"], flush=True)\n'
    script = tmp_path / "example.py"
    script.write_text(PRELUDE + code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PROCESSED 60" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "bootstrapping phase" not in proc.stderr
