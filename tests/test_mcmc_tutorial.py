"""The code of docs/tutorials/mcmc.rst runs: every literal block (a paragraph ending in '::') is executed in order
in one namespace, in a temporary folder (the page writes plots). Its assertions are the page's own claims
checked below (tuned variances near 1, a quiet run of the tuned kernel)."""

import textwrap
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorials" / "mcmc.rst"


def code_blocks(text: str) -> list[str]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::") and not lines[i].lstrip().startswith(".."):
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)))
        else:
            i += 1
    return [b for b in blocks if b.strip()]


def test_the_mcmc_tutorial_code_runs(tmp_path, monkeypatch):
    blocks = code_blocks(PAGE.read_text())
    assert len(blocks) >= 6 and any("warmup(" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    source = "\n".join(blocks)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        exec(compile(source, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own code
    ratio = namespace["tuned"].parameters["inverse_mass"] / namespace["sd"] ** 2
    assert ((ratio - 1).abs() < 0.25).all()
    assert (tmp_path / "gaussian_ranks.png").exists() and (tmp_path / "gaussian_trace.png").exists()
    assert namespace["summary"]["max_rhat"] < 1.1
