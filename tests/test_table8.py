"""The Table 8 script (examples/toy_analytic_sampling.py) runs small: schema, NFE columns, and the paper's ordering."""

import json

import pytest

from _scripts import load_example


@pytest.mark.slow
def test_table8_rows_are_ordered_as_in_the_paper_at_20_and_50_evaluations(tmp_path, capsys):
    table8 = load_example("toy_analytic_sampling")
    out = tmp_path / "t8.json"
    table8.main(["--samples", "4000", "--steps", "20", "50", "--json", str(out), "--no-progress",
                 "--figure", str(tmp_path / "fig11.png")])
    payload = json.loads(out.read_text())
    results = payload["results"]
    assert {tuple(sorted(r)) for r in results} == {("diffusion", "distance", "grid", "nfe", "nll", "sampler")}
    assert sorted((r["diffusion"], r["sampler"], r["nfe"]) for r in results) == sorted(
        (d, s, n) for d, s in [("cld", "em"), ("cld", "sscs"), ("vpsde", "em")] for n in (20, 50))
    assert all(r["grid"] == "uniform" and isinstance(r["nfe"], int) for r in results)
    nll = {(r["diffusion"], r["sampler"], r["nfe"]): r["nll"] for r in results}
    for n in (20, 50):
        assert nll[("cld", "sscs", n)] < nll[("vpsde", "em", n)] < nll[("cld", "em", n)]
    # the data's own cross-entropy (its entropy, about -1.40 nats) is the reference row
    assert abs(payload["reference"]["nll"] + 1.40) < 0.05
    assert (tmp_path / "fig11.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "( 60.60)" in printed and "CLD    SSCS" in printed
