"""Type checkers see fastoptim's signatures (issue 20): the package is typed (py.typed, a stub for
the compiled module), so `mypy --strict` on a user's script accepts correct calls and reports a
wrong argument type."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

GOOD = """
import torch
import fastoptim

model = torch.nn.Linear(4, 2)
opt = fastoptim.AdamW(model.parameters(), lr=0.1, weight_decay=1e-2)
lamb = fastoptim.create_optimizer(model, "lamb", lr=1e-3)
model(torch.randn(3, 4)).sum().backward()
opt.step()
"""
BAD = GOOD + 'wrong = fastoptim.AdamW(model.parameters(), lr="0.1")\n'


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user.py"
    script.write_text(source)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(script)],
                          capture_output=True, text=True, cwd=tmp_path)


def test_mypy_strict_checks_a_users_calls(tmp_path):
    good = mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout
    bad = mypy(tmp_path, BAD)
    assert bad.returncode == 1
    assert 'Argument "lr" to "AdamW" has incompatible type "str"; expected "float | Tensor"' in bad.stdout


def test_every_public_class_and_function_documents_each_argument():
    """An Args: section in every public docstring, naming each parameter of the signature."""
    import inspect
    import re

    import fastoptim

    for name in fastoptim.__all__:
        obj = getattr(fastoptim, name)
        doc = inspect.getdoc(obj) or ""
        assert "Args:" in doc, f"{name} has no Args: section"
        documented = set()
        for line in doc.split("Args:", 1)[1].splitlines():
            match = re.match(r"\s{4}([\w, ]+):", line)
            if match:
                documented |= {part.strip() for part in match.group(1).split(",")}
        missing = [p for p in inspect.signature(obj).parameters if p not in documented and p not in ("self", "kwargs")]
        assert not missing, f"{name}'s Args: lacks {missing}"
