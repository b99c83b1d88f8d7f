"""A sweep's report.html in headless Chromium: its table and figures are there and its figures are drawn."""

import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from tests.integration.helpers import TINY, cli

CHROMIUM = "/usr/bin/chromium"
# As root, on a machine with no outside network: no sandbox, no GPU, no background connections.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# matplotlib's first two colours: the curves of the figures
BLUE, ORANGE = np.array([0x1F, 0x77, 0xB4]) / 255, np.array([0xFF, 0x7F, 0x0E]) / 255


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser/install.sh (HARMCORE_BROWSER=1 needs it)")
    out = tmp_path_factory.mktemp("page")
    r = cli("experiments.run", *TINY, "-m", "model=tiny_random,tiny_random_instruct", "sparsity=0,0.05",
            f"output_root={out}", "name=page")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "sweeps" / "page" / "report.html"


def chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp}", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_page_renders_its_table_and_figures(page, tmp_path):
    dom = chromium("--dump-dom", page.as_uri(), tmp=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<h1>Sweep page</h1>" in html and "4 points, 0 failed, 0 missing" in html
    curves, ratios = html.split("<h2>Curves</h2>")[1].split("<h2>Compression ratios</h2>")
    assert curves.count("<tr>") == 3 and "<td>tiny_random</td>" in curves and "<td>tiny_random_instruct</td>" in curves
    assert "<td>tiny_random_instruct</td><td>aligned</td><td>tiny_random</td>" in ratios
    for figure in ("curve.png", "pairs.png"):
        assert f'alt="{figure}" src="data:image/png;base64,' in html
    # the figures are decoded and drawn: the screenshot holds both curves' colours
    shot = tmp_path / "shot.png"
    r = chromium(f"--screenshot={shot}", "--window-size=1400,2600", page.as_uri(), tmp=tmp_path / "profile2")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    for colour in (BLUE, ORANGE):
        near = np.abs(pixels - colour).max(axis=-1) < 0.08
        assert near.sum() > 500, (colour, int(near.sum()))
