"""The records committed for the guides and benchmarks name paths as a user's machine would have them: relative to
the project, or under `~`; never a folder of the machine that measured them."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.~])/(root|home|tmp|work|Users)/")


def test_committed_records_name_no_machine_paths():
    records = [p for folder in ("nbs/tutorials", "benchmarks", "params") for p in (ROOT / folder).rglob("*")
               if p.suffix in (".json", ".csv", ".yaml", ".md")]
    assert records
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:120]}" for p in records
             for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "machine paths in committed records:\n" + "\n".join(found)
