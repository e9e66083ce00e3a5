"""The installation's guard (issue 20): fastoptim records the torch it was compiled against and, under
another torch release, refuses to load its compiled module with a message naming both versions."""

import subprocess
import sys

import torch

import fastoptim


def test_the_build_records_its_torch():
    assert fastoptim._build_info.TORCH_VERSION == torch.__version__


def test_another_torch_release_is_refused_at_import_naming_both_versions():
    code = "import torch; torch.__version__ = '2.11.0+cu130'; import fastoptim"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastoptim was built against torch " + torch.__version__)
    assert "but torch 2.11.0+cu130 is installed" in last and "pip install --no-build-isolation" in last
    # the same release with another local tag (a CUDA build of it) loads
    code = f"import torch; torch.__version__ = '{torch.__version__.split('+')[0]}+cu130'; import fastoptim"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
