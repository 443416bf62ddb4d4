"""notebooks/budget_sweep.ipynb executes headless (nbclient) on a small real sweep, and says so
in a cell output, instead of crashing, when the sweep directory is absent."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "budget_sweep.ipynb"
KERNEL = "python3"


def ensure_kernel() -> None:
    """The python3 kernel spec (installed with ipykernel; installed here if missing)."""
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL],
                       check=True, capture_output=True)


def execute(sweep_dir: Path, monkeypatch) -> list:
    """Run every cell with ALLOCBENCH_SWEEP_DIR set (the kernel inherits the environment)."""
    ensure_kernel()
    monkeypatch.setenv("ALLOCBENCH_SWEEP_DIR", str(sweep_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def text_of(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_notebook_draws_the_sweep(tmp_path, monkeypatch):
    from bench.run import main
    sweep = tmp_path / "sweep"
    assert main(["--methods", "grpo,knapsack", "--budgets", "1.0,0.5", "--seeds", "0,1",
                 "--preset", "smoke", "--steps", "2", "--out", str(sweep), "--no-plots"]) == 0
    outputs = execute(sweep, monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 4                     # budget sweep + accuracy vs 3 costs
    assert "8 finished runs" in text_of(outputs)


def test_notebook_says_when_the_sweep_is_absent(tmp_path, monkeypatch):
    outputs = execute(tmp_path / "absent", monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    assert "No finished runs" in text_of(outputs)
