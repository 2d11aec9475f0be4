"""Collect the JSON results in benchmarks/results/ into README.md there and into the docs' generated pages.

Run after the benchmark scripts: ``python benchmarks/report.py`` (``make bench`` does).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GENERATED = ROOT / "docs" / "_generated"
PAPER = {("cld", "em"): [60.6, 9.71, 0.72, -1.04], ("cld", "sscs"): [10.5, 1.55, -1.25, -1.54],
         ("vpsde", "em"): [14.2, 4.68, -0.35, -1.11]}


def rst_table(headers, rows) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [headers] + rows:
        lines.append("   * - " + str(row[0]))
        lines += [f"     - {v}" for v in row[1:]]
    return "\n".join(lines) + "\n"


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table8_rows(path: Path):
    results = json.loads(path.read_text())["results"]
    steps = sorted({r["nfe"] for r in results})
    rows = []
    for (diffusion, sampler), paper in PAPER.items():
        cells = []
        for n in steps:
            r = next(r for r in results if (r["diffusion"], r["sampler"], r["nfe"]) == (diffusion, sampler, n))
            p = paper[[20, 50, 100, 200].index(n)] if n in (20, 50, 100, 200) else None
            cells.append(f"{r['nll']:.2f} ({p}) / {r['distance']:.3f}")
        rows.append([f"{diffusion.upper()} {sampler.upper()}"] + cells)
    return [""] + [f"n={n}" for n in steps], rows


def md_file_table(path: Path):
    """The command line and the (first) table of a benchmark's own markdown file, as (command, headers, rows)."""
    if not path.exists():
        return None, None, None
    lines = path.read_text().splitlines()
    command = next((line for line in lines if line.startswith("Command:")), None)
    table = []
    for line in lines:  # the first contiguous table only (a page may hold several)
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if len(table) < 2:
        return command, None, None
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    return command, split(table[0]), [split(line) for line in table[2:]]


EULER_BASELINES = ("CLD EM", "CLD torchsde euler", "VPSDE EM")  # each run on the uniform and the quadratic grid


def result_files(prefixes) -> list[Path]:
    """The JSON results with these prefixes; a ``*_quick`` file only where no full run of it exists."""
    files = [p for prefix in prefixes for p in sorted(RESULTS.glob(f"{prefix}_*.json"))]
    names = {p.stem for p in files}
    return [p for p in files if ".part-" not in p.stem
            and not (p.stem.endswith("_quick") and p.stem[: -len("_quick")] in names)]


def targets() -> list[str]:
    """The issues' targets, checked against the result files present (markdown bullet lines)."""
    out = []
    for path in result_files(("step_cost",)):
        data = json.loads(path.read_text())
        rows = [r for r in data["results"] if "em_over_floor" in r]  # issue 10's format
        if not rows:
            continue
        for key, label in (("em_over_floor", "library EM / eager hand loop"),
                           ("sscs_over_floor", "library SSCS / eager hand loop"),
                           ("em_compiled_over_floor_compiled", "compiled library EM / compiled hand loop")):
            cells = [r for r in rows if key in r]
            if not cells:
                continue
            worst = max(cells, key=lambda r: r[key])
            verdict = "met" if worst[key] <= 1.15 else (
                f"missed (worst {worst[key]:.2f}x at batch {worst['batch']:.0e}, {worst['threads']} thread(s))")
            out.append(f"- {path.stem}: {label} <= 1.15 at every batch: **{verdict}**.")
        for key, label in (("torchsde_over_em", "EM"), ("torchsde_over_sscs", "SSCS")):
            worst = min(rows, key=lambda r: r[key])
            verdict = "met" if worst[key] >= 3.0 else (
                f"missed (worst {worst[key]:.2f}x at batch {worst['batch']:.0e}, {worst['threads']} thread(s))")
            out.append(f"- {path.stem}: torchsde euler at least 3x slower than our {label} at every batch: "
                       f"**{verdict}**.")
    for path in result_files(("trained",)):
        data = json.loads(path.read_text())
        out += [f"- {path.stem} (issue {data.get('issue', 21)}): {line}." for line in data.get("targets", [])]
    for path in result_files(("accuracy",)):
        data = json.loads(path.read_text())
        out += [f"- {path.stem} (issue {data.get('issue', 11)}): {line}." for line in data.get("targets", [])]
        results, floor = data["results"], data.get("floor", {})
        if data.get("issue", 11) != 11:  # issue 5's SSCS-vs-Euler check reads the older files' raw means only
            continue
        for metric in ("sw2", "nll"):
            floor_text = f"; a fresh data sample scores {floor[metric]:.3g}" if metric in floor else ""
            for grid in ("uniform", "quadratic"):
                won, lost = [], []
                for r in results:
                    if r["method"] != f"CLD SSCS ({grid})" or r["nfe"] > 100:
                        continue
                    rivals = [b for b in results if b["nfe"] == r["nfe"]
                              and b["method"] in {f"{name} ({grid})" for name in EULER_BASELINES}]
                    if not rivals:
                        continue  # nothing to compare with at this NFE and grid
                    best = min(rivals, key=lambda b: b[metric])
                    if r[metric] < best[metric]:
                        won.append(str(r["nfe"]))
                    else:
                        lost.append(f"NFE {r['nfe']} by {best['method']} ({best[metric]:.3g} vs {r[metric]:.3g})")
                if not won and not lost:
                    continue
                verdict = "met" if not lost else "missed"
                detail = (f"wins at NFE {', '.join(won)}" if won else "no wins") + (
                    f"; beaten at {'; '.join(lost)}" if lost else "")
                out.append(f"- {path.stem}, {metric}, SSCS vs the Euler baselines, all on the {grid} grid, at "
                           f"equal NFE <= 100: **{verdict}** ({detail}{floor_text}).")
    return out


def guidance() -> tuple[str, str] | None:
    """Which sampler and grid to use at each budget, from the benchmarks' ``guidance`` entries (issue 21):
    markdown and reStructuredText, or ``None`` when no result file has them."""
    columns = []  # (title, {(process, nfe): text})
    for stems, title in ((["accuracy_mixture2d"], "exact score, 2-D mixture"),
                         (["accuracy_mixture64d"], "exact score, 64-D mixture"),
                         (sorted(p.stem for p in RESULTS.glob("trained_samplers*.json") if not p.stem.endswith("_quick"))
                          or ["trained_samplers"], "trained toy models (diamond, swiss roll)")):
        paths = [RESULTS / f"{stem}.json" for stem in stems]
        paths = [p if p.exists() else p.with_name(p.stem + "_quick.json") for p in paths]
        paths = [p for p in paths if p.exists()]
        best: dict = {}
        for path in paths:
            for e in json.loads(path.read_text()).get("guidance", []):
                key = (e["process"], e["nfe"])
                if key not in best or e["ratio"] < best[key]["ratio"]:
                    best[key] = e
        if best:
            quick = any(p.stem.endswith("_quick") for p in paths)
            columns.append((title + (" (quick run)" if quick else ""),
                            {k: f"{e['sampler']}, {e['grid']} grid ({e['ratio']:.2f}x floor)" for k, e in best.items()}))
    if not columns:
        return None
    keys = sorted({k for _, cells in columns for k in cells})
    headers = ["process", "NFE"] + [title for title, _ in columns]
    rows = [[process, nfe] + [cells.get((process, nfe), "") for _, cells in columns] for process, nfe in keys]
    note = ("Best configuration of ours at each budget by mean SW2 / floor over the seeds (the value in brackets), "
            "from the accuracy benchmark (exact scores) and the trained-model benchmark; 'optimised' is a grid from "
            "splitdyn.grid_search for that sampler and budget. Within the standard errors several configurations "
            "often tie: see the full tables.")
    return (note + "\n\n" + md_table(headers, rows), note + "\n\n" + rst_table(headers, rows))


def main() -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    md = ["# Benchmark results", "",
          "Generated by `python benchmarks/report.py` from the JSON files in this folder. "
          "Each section names its command and machine.", ""]
    rst_bench = []
    rst_t8 = []
    for grid in ("uniform", "quadratic"):
        path = RESULTS / f"table8_{grid}.json"
        if path.exists():
            headers, rows = table8_rows(path)
            paper = "paper" if grid == "uniform" else "paper, uniform grid: it reports no quadratic-grid Table 8"
            title = f"Table 8, {grid} grid: mean -log p_data ({paper}) / sliced W2 to data"
            md += [f"## {title}", "", f"Command: `python examples/toy_analytic_sampling.py --samples 100000 --grid {grid}` "
                   "(2-core CPU, exact scores).", "", md_table(headers, rows)]
            rst_t8 += [title, "~" * len(title), "", rst_table(headers, rows)]
    checks = targets()
    if checks:
        md += ["## Targets", "", *checks, ""]
        rst_bench += ["Targets", "-------", "", *[c.replace("|", "\\|") for c in checks], ""]  # no substitutions
    # cld_fewstep.json is the merged few-step CLD result (its cld_fewstep_<part> files are the runs it merges)
    merged = [RESULTS / "cld_fewstep.json"] if (RESULTS / "cld_fewstep.json").exists() else []
    for path in result_files(("step_cost", "accuracy", "trained", "gpu", "digits", "mcmc", "adaptive",
                              "noise_source", "ablation", "sample_call")) + merged:
        if path.stem.startswith("mcmc_reference"):  # reference posteriors (data for the tests), not results
            continue
        data = json.loads(path.read_text())
        data.setdefault("machine", "not recorded in the JSON (see the command's page)")
        if "error" in data:  # a part that failed (bench_gpu.py writes its traceback): say so, no table
            md += [f"## {path.stem}", "", f"Machine: {data['machine']}", "", "**failed** (traceback in "
                   f"`{path.with_suffix('.md').name}`)", ""]
            rst_bench += [path.stem, "-" * len(path.stem), "", f"Machine: {data['machine']}", "", "**failed**", ""]
            continue
        command, headers, table_rows = md_file_table(path.with_suffix(".md"))
        if headers is None and data.get("results"):
            rows = data["results"]
            headers = list(rows[0])
            table_rows = [[fmt(r[h]) for h in headers] for r in rows]
        if headers is None:  # neither a table on its page nor result rows: the page alone says it
            print(f"{path.name}: no table found; only its markdown page is linked")
        intro = [f"Machine: {data['machine']}", ""] + ([re.sub(r"`([^`]*)`", lambda m: "``" + m.group(1).strip() + "``", command), ""] if command else [])
        md += [f"## {path.stem}", ""]
        body = path.with_suffix(".md")
        if body.exists():  # the whole page the benchmark wrote (machine, command, every table, notes)
            md += [body.read_text().strip(), ""]
        else:
            md += [f"Machine: {data['machine']}", ""] + ([command, ""] if command else [])
            md += [md_table(headers, table_rows)] if headers is not None else []
        png = path.with_suffix(".png")
        if png.exists():
            md += [f"![{path.stem}]({png.name})", ""]
        rst_bench += [path.stem, "-" * len(path.stem), "", *intro]
        rst_bench += [rst_table(headers, table_rows)] if headers is not None else [
            f"See ``benchmarks/results/{path.with_suffix('.md').name}``.", ""]
        if png.exists():
            shutil.copyfile(png, GENERATED / png.name)
            rst_bench += [f".. image:: /_generated/{png.name}", "   :width: 600px", ""]
    advice = guidance()
    if advice is not None:
        (RESULTS / "sampler_guidance.md").write_text("# Which sampler and grid at which budget\n\n" + advice[0])
        md[4:4] = ["## Which sampler and grid at which budget", "", advice[0], ""]
    (GENERATED / "sampler_guidance.rst").write_text(advice[1] if advice is not None else "(No results yet.)\n")
    (RESULTS / "README.md").write_text("\n".join(md) + "\n")
    (GENERATED / "benchmarks.rst").write_text("\n".join(rst_bench) + "\n" if rst_bench else "(No results yet.)\n")
    (GENERATED / "table8.rst").write_text("\n".join(rst_t8) + "\n" if rst_t8 else "(No results yet.)\n")
    print(f"wrote {RESULTS / 'README.md'} and {GENERATED}")


if __name__ == "__main__":
    main()
