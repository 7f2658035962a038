"""The mutation check (`benchmarks/mutation_check.py`) stays runnable as the code moves: every
mutation names a file that exists, source text found there exactly once, and test files that
exist. (The mutation run itself takes about 40 min: a benchmark, not a test.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutations():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "benchmarks" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.MUTATIONS


@pytest.mark.parametrize("mutation", _mutations(), ids=lambda m: m.name)
def test_each_mutation_still_applies(mutation):
    path = ROOT / mutation.file
    assert path.is_file(), f"{mutation.name}: {mutation.file} does not exist (moved?)"
    assert path.read_text().count(mutation.old) == 1, f"{mutation.name}: its source text is not in {mutation.file} once"
    for test in mutation.tests:
        test_file = test.split("::")[0]
        if test_file.endswith(".py"):
            assert (ROOT / test_file).is_file(), f"{mutation.name}: {test_file} does not exist"
