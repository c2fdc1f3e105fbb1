"""What runs on the VPS is the product alone: `pip install ./worker` in a clean venv brings the copier and its run-time
dependencies, no simulator, no lab tools, no aiohttp."""
import subprocess
import sys
import zipfile
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "worker"
LAB_ONLY = {"aiohttp", "polycopier-lab", "supervisor"}
REPORT_EXTRA = {"matplotlib", "numpy", "pillow"}        # `pip install polycopier[report]`, the operator's machine


def test_the_product_installs_in_a_clean_venv_without_the_simulator_the_lab_or_aiohttp(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The wheel first (what build-wheelhouse ships), then the install as an operator would run it.
    subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(WORKER)],
                   check=True, timeout=600, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("polycopier-*.whl")
    packages = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("polycopier-")}
    assert packages == {"copier"}, packages
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900, capture_output=True)
    installed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], check=True, text=True,
                               capture_output=True).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert "polycopier" in names and "gevent" in names and not names & LAB_ONLY, names & LAB_ONLY
    assert not names & REPORT_EXTRA, names & REPORT_EXTRA
    probe = "import importlib.util as u; print([m for m in ('polysim', 'polylab', 'copier.soak', 'copier.bench') " \
            "if u.find_spec(m.split('.')[0]) and (('.' not in m) or u.find_spec(m))])"
    found = subprocess.run([str(py), "-c", probe], check=True, text=True, capture_output=True, cwd=tmp_path).stdout
    assert found.strip() == "[]"
    version = subprocess.run([str(venv / "bin" / "copier"), "check-config", "--config", str(tmp_path / "none.yaml")],
                             text=True, capture_output=True)
    assert version.returncode == 2 and "none.yaml" in version.stderr      # the CLI runs, and names the missing file
    # --html without the extra: exit 2 with one line naming it, before the store is touched
    config = tmp_path / "copier.yaml"
    config.write_text(f"store: {{path: {tmp_path / 'store.sqlite'}}}\n")
    html = subprocess.run([str(venv / "bin" / "copier"), "report", "--config", str(config), "--html",
                           str(tmp_path / "r.html")], text=True, capture_output=True)
    assert html.returncode == 2 and html.stderr.count("\n") == 1 and "polycopier[report]" in html.stderr, html.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "store.sqlite").exists()
