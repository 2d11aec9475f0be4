"""Each ablation script (examples/ablation_*.py) runs with its --quick tiny settings and writes a well-formed
JSON, markdown table and PNG with finite numbers; bad arguments end with one line and exit status 2."""

import json
import math

import pytest

from _scripts import load_example

SCRIPTS = {
    "ablation_damping": ([], ["damping_regimes"]),
    "ablation_hyperparameters": (["gamma"], ["table5_gamma"]),
    "ablation_objectives": ([], ["objectives"]),
    "ablation_jacobian": ([], ["jacobian_complexity"]),
    "ablation_sampling": ([], ["denoising_ode"]),
    "ablation_paths": ([], ["generation_paths"]),
}


def numbers(value):
    """Every number in a JSON value (non-finite ones are written as strings: 'inf', 'nan')."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, str) and value in ("inf", "-inf", "nan"):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


# slow (1-9 s per script, 31 s for the six): each quick run trains a toy model and draws its figure
@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_quick_run_writes_finite_json_a_table_and_a_figure(script, tmp_path):
    argv, names = SCRIPTS[script]
    load_example(script).main(argv + ["--quick", "--out", str(tmp_path)])
    for name in names:
        payload = json.loads((tmp_path / f"{name}.json").read_text())
        assert {"claim", "command", "machine", "settings"} <= payload.keys()
        values = list(numbers({k: v for k, v in payload.items() if k != "settings"}))
        assert values and all(math.isfinite(v) for v in values), name
        table = (tmp_path / f"{name}.md").read_text()
        assert table.startswith("## ") and "|---|" in table and "hold" in table
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("script, argv, flag", [
    ("ablation_damping", ["--samples", "0"], "--samples"),
    ("ablation_hyperparameters", ["mass", "--seeds", "0"], "--seeds"),
    ("ablation_hyperparameters", ["temperature"], "table"),
    ("ablation_objectives", ["--steps", "-1"], "--steps"),
    ("ablation_jacobian", ["--samples", "x"], "--samples"),
    ("ablation_sampling", ["--nfe", "1"], "--nfe"),
    ("ablation_sampling", ["--tolerances", "0"], "--tolerances"),
    ("ablation_paths", ["--snapshots", "1"], "--snapshots"),
])
def test_a_bad_argument_exits_2_with_one_line_naming_it(script, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(script).main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and flag in err[0], err
