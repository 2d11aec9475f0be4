"""The Table 8 script runs small and its rows are ordered as in the paper at n = 20 and 50."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_table8_rows_are_ordered_as_in_the_paper(tmp_path):
    table8 = load_example("toy_analytic_sampling")
    out = tmp_path / "t8.json"
    table8.main(["--samples", "3000", "--steps", "20", "50", "--json", str(out), "--no-progress",
                 "--figure", str(tmp_path / "fig11.png")])
    results = json.loads(out.read_text())["results"]
    assert {tuple(sorted(r)) for r in results} == {("diffusion", "distance", "grid", "nfe", "nll", "sampler")}
    nll = {(r["diffusion"], r["sampler"], r["nfe"]): r["nll"] for r in results}
    for n in (20, 50):
        assert nll[("cld", "sscs", n)] < nll[("vpsde", "em", n)] < nll[("cld", "em", n)]
    assert (tmp_path / "fig11.png").stat().st_size > 10_000
