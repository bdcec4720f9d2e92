"""Sweep grid expansion and the report (results.csv, summary.md, plots) on hand-made runs."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clip_td.app.cli import main as cli_main
from clip_td.base.io import InputError
from clip_td.app.sweep import GridConfig, aggregate, expand_grid, is_complete, mean_std, report


def _write_run(root: Path, task, method, frac, seed, scores, extra=""):
    d = root / "runs" / task / method / f"f{frac:g}" / f"s{seed}"
    if extra:
        d = d / extra
    d.mkdir(parents=True)
    m = {"task": task, "method": method, "train_fraction": frac, "seed": seed, "eval": scores,
         "train": {"steps": 1, "samples_per_s": 1.0, "step_time_s": 1.0}}
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def test_expand_grid_order_and_extra():
    grid = OmegaConf.structured(GridConfig(tasks=["vqa"], methods=["none", "clip_td"], fractions=[0.05], seeds=[0, 1],
                                           extra={"method.rho": [0.25, 0.5]}))
    cells = expand_grid(grid)
    assert len(cells) == 8
    assert cells[0].name == "vqa/none/f0.05/s0/method.rho=0.25"
    assert cells[0].overrides() == ["task.name=vqa", "method.name=none", "train.fraction=0.05", "seed=0", "method.rho=0.25"]
    with pytest.raises(InputError, match=r"grid.fractions holds 1.5"):
        expand_grid(OmegaConf.structured(GridConfig(fractions=[1.5])))
    with pytest.raises(InputError, match=r"grid.seeds is empty"):
        expand_grid(OmegaConf.structured(GridConfig(seeds=[])))


def test_mean_std_hand_computed():
    assert mean_std([50.0, 52.0, 54.0]) == (52.0, 2.0)
    assert mean_std([7.0]) == (7.0, 0.0)


def test_is_complete(tmp_path):
    d = _write_run(tmp_path, "vcr", "none", 0.05, 0, {"val": {"q2a": 1.0, "qa2r": 2.0, "q2ar": 0.5}})
    assert is_complete(d / "metrics.json")
    d2 = _write_run(tmp_path, "vcr", "none", 0.05, 1, {"val": {"q2a": 1.0}})
    assert not is_complete(d2 / "metrics.json")
    (d2 / "metrics.json").write_text("{truncated")
    assert not is_complete(d2 / "metrics.json")


def test_report_tables_and_plots(tmp_path):
    for seed, (a, b) in enumerate([(40.0, 50.0), (42.0, 54.0), (44.0, 52.0)]):
        for method, v in (("none", a), ("clip_td", b)):
            _write_run(tmp_path, "vqa", method, 0.05, seed, {"val": {"vqa_acc": v}, "val_shift": {"vqa_acc": v - 10}})
    # an incomplete run is ignored
    _write_run(tmp_path, "vqa", "naive_kd", 0.05, 0, {"val": {}})
    out = report(tmp_path)
    rows = list(csv.DictReader(open(out["results"])))
    assert list(rows[0]) == ["task", "method", "train_fraction", "seed", "split", "metric", "value"]
    assert len(rows) == 12
    assert rows[0] == {"task": "vqa", "method": "none", "train_fraction": "0.05", "seed": "0", "split": "val",
                       "metric": "vqa_acc", "value": "40.0000"}
    summary = out["summary"].read_text()
    # none: mean 42, std 2; clip_td: mean 52, std 2; gain +10 (+23.8%)
    assert "| none | 5% | val | vqa_acc | 42.00 +- 2.00 | 3 |  |  |" in summary
    assert "| clip_td | 5% | val | vqa_acc | 52.00 +- 2.00 | 3 | +10.00 | +23.8% |" in summary
    assert "| clip_td | 5% | val_shift | vqa_acc | 42.00 +- 2.00 | 3 | +10.00 | +31.2% |" in summary
    for name in ("metric_vs_fraction", "gain_shift_vs_indomain"):
        assert out[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    agg = aggregate([{"task": "vqa", "method": "none", "train_fraction": 0.05, "seed": 0, "split": "val", "metric": "vqa_acc", "value": 1.0}])
    assert agg[("vqa", "none", 0.05, "val", "vqa_acc")]["n"] == 1


def test_report_cli_errors(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no complete metrics.json" in capsys.readouterr().err


def test_report_knows_the_grid_from_the_saved_config(tmp_path, capsys):
    """Extra grid keys label the method as results.csv does; a cell with no run at all is listed."""
    from clip_td.app.sweep import SweepConfig
    from clip_td.base.config import save_config

    grid = GridConfig(tasks=["vqa"], methods=["none", "clip_td"], fractions=[0.05], seeds=[0, 1],
                      extra={"method.rho": [0.25]})
    save_config(OmegaConf.structured(SweepConfig(output_dir=str(tmp_path), grid=grid)), tmp_path)
    for seed in (0, 1):
        _write_run(tmp_path, "vqa", "none", 0.05, seed, {"val": {"vqa_acc": 40.0 + seed}}, extra="method.rho=0.25")
    _write_run(tmp_path, "vqa", "clip_td", 0.05, 0, {"val": {"vqa_acc": 50.0}}, extra="method.rho=0.25")
    summary = report(tmp_path)["summary"].read_text()
    assert "| none[method.rho=0.25] | 5% | val | vqa_acc | 40.50 +- 0.71 | 2 |" in summary
    assert "| clip_td[method.rho=0.25] | 5% | val | vqa_acc | 50.00 (one seed: no std) | 1 of 2 \u2020 |" in summary
    assert "1 of 4 grid cells have no complete metrics.json" in summary
    assert "| vqa | clip_td[method.rho=0.25] | 5% | 1 | not run (or its metrics.json is incomplete) |" in summary
    assert cli_main(["report", str(tmp_path)]) == 1
    assert "vqa/clip_td/f0.05/s1/method.rho=0.25" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path), "--allow-missing"]) == 0


def test_a_results_folder_without_its_runs_re_renders_from_results_csv(tmp_path, capsys):
    """docs/results keeps results.csv + config.yaml only: the report reads the CSV (unchanged) and
    still marks the seeds the grid asked for and the CSV lacks."""
    from clip_td.app.sweep import SweepConfig
    from clip_td.base.config import save_config

    grid = GridConfig(tasks=["snli_ve"], methods=["none", "clip_td"], fractions=[0.25], seeds=[0, 1, 2])
    save_config(OmegaConf.structured(SweepConfig(output_dir=str(tmp_path), grid=grid)), tmp_path)
    lines = ["task,method,train_fraction,seed,split,metric,value"]
    lines += [f"snli_ve,none,0.25,{s},val,accuracy,{60 + s}.0000" for s in (0, 1, 2)]
    lines += [f"snli_ve,clip_td,0.25,{s},val,accuracy,{70 + 2 * s}.0000" for s in (1, 2)]  # seed 0 lost
    csv_text = "\n".join(lines) + "\n"
    (tmp_path / "results.csv").write_text(csv_text)
    summary = report(tmp_path)["summary"].read_text()
    assert (tmp_path / "results.csv").read_text() == csv_text
    assert "| none | 25% | val | accuracy | 61.00 +- 1.00 | 3 |" in summary
    # clip_td: mean of 72 and 74 = 73, std sqrt(2) = 1.41, marked 2 of 3; gain 73 - 61 = +12
    assert "| clip_td | 25% | val | accuracy | 73.00 +- 1.41 | 2 of 3 \u2020 | +12.00 |" in summary
    assert "| snli_ve | clip_td | 25% | 0 | not run (or its metrics.json is incomplete) |" in summary
    assert cli_main(["report", str(tmp_path)]) == 1
    assert "snli_ve/clip_td/f0.25/s0" in capsys.readouterr().err
    (tmp_path / "results.csv").write_text("task,method,train_fraction,seed,split,metric,value\nsnli_ve,none,x,0,val,accuracy,1\n")
    with pytest.raises(InputError, match=r"results.csv:2: train_fraction, seed and value must be numbers"):
        report(tmp_path)


def test_fraction_overrides_give_each_fraction_its_budget(tmp_path):
    """Per-fraction overrides follow the global and task ones and precede the cell's own keys; a key
    the grid does not hold applies to no cell; a key that is no fraction in (0, 1] is refused before
    the output folder is written."""
    from clip_td.app.sweep import SweepConfig, _cell_command, run_sweep

    base = OmegaConf.structured(SweepConfig)
    cfg = OmegaConf.merge(base, OmegaConf.create(
        "overrides: [train.max_steps=300]\n"
        "task_overrides: {vqa: [train.batch_size=16]}\n"
        "fraction_overrides: {1.0: [train.max_steps=6000, train.patience=4], '0.05': [train.max_steps=1200]}\n"
        "grid: {tasks: [vqa], methods: [none], fractions: [0.05, 1.0], seeds: [0]}\n"))
    cells = expand_grid(cfg.grid)
    cmds = [_cell_command(cfg, c, tmp_path / c.name) for c in cells]
    args = [cmd[cmd.index("clip_td.app.trainer") + 1:] for cmd in cmds]
    assert args[0] == ["train.max_steps=300", "train.batch_size=16", "train.max_steps=1200", "task.name=vqa",
                       "method.name=none", "train.fraction=0.05", "seed=0", f"output_dir={tmp_path / cells[0].name}"]
    assert args[1][:5] == ["train.max_steps=300", "train.batch_size=16", "train.max_steps=6000", "train.patience=4",
                           "task.name=vqa"]
    narrowed = OmegaConf.merge(cfg, OmegaConf.create("grid: {fractions: [0.05]}"))  # 1.0's keys apply to no cell
    assert [_cell_command(narrowed, c, tmp_path)[-6:-4] for c in expand_grid(narrowed.grid)] == [
        ["train.max_steps=1200", "task.name=vqa"]]
    for key in ("1.5", "full"):
        bad = OmegaConf.merge(cfg, OmegaConf.create(f"fraction_overrides: {{'{key}': [train.max_steps=2]}}\n"
                                                    f"output_dir: {tmp_path / 'never'}\n"))
        with pytest.raises(InputError, match=rf"fraction_overrides has key '{key}'; expected a training fraction in \(0, 1\]"):
            run_sweep(bad)
    assert not (tmp_path / "never").exists()


def test_plot_legend_labels_and_colours_for_long_method_rows():
    """Rows with extra grid keys are shown without the `method.` prefix, wrapped; every method
    gets its own colour, none / naive_kd / clip_td their fixed ones."""
    from clip_td.app.sweep import _legend_label, _palette

    label = "clip_td[method.answer_sets=True,method.label_free=1.0,method.label_free_answers=True]"
    assert _legend_label(label) == "clip_td[answer_sets=True,\nlabel_free=1.0,\nlabel_free_answers=True]"
    assert _legend_label("naive_kd") == "naive_kd"
    rows = ["clip_td", "none", "naive_kd", "clip_td_nosel", "clip_td_noweight", label, "clip_td[method.eta=0.0]"]
    colours = _palette(rows)
    assert set(colours) == set(rows)
    assert (colours["none"], colours["naive_kd"], colours["clip_td"]) == ("tab:blue", "tab:orange", "tab:green")
    assert len({str(c) for c in colours.values()}) == len(rows)


def test_report_includes_another_sweeps_results_csv(tmp_path):
    """--include adds the cells this folder lacks; a run of this folder wins over an included row."""
    new = tmp_path / "new"
    for seed, v in enumerate((50.0, 54.0)):
        _write_run(new, "vqa", "clip_td", 0.05, seed, {"val": {"vqa_acc": v}})
    old = tmp_path / "old"
    old.mkdir()
    lines = ["task,method,train_fraction,seed,split,metric,value"]
    lines += [f"vqa,none,0.05,{s},val,vqa_acc,{v}" for s, v in ((0, 40.0), (1, 44.0))]
    lines += ["vqa,clip_td,0.05,0,val,vqa_acc,10.0000"]  # the new folder's own run of this cell wins
    (old / "results.csv").write_text("\n".join(lines) + "\n")
    assert cli_main(["report", str(new), "--include", str(old)]) == 0
    rows = list(csv.DictReader(open(new / "results.csv")))
    assert [(r["method"], r["seed"], r["value"]) for r in rows] == [
        ("none", "0", "40.0000"), ("none", "1", "44.0000"), ("clip_td", "0", "50.0000"), ("clip_td", "1", "54.0000")]
    summary = (new / "summary.md").read_text()
    # none 42 +- 2.83 (n 2), clip_td 52 +- 2.83, gain +10
    assert "| none | 5% | val | vqa_acc | 42.00 +- 2.83 | 2 |  |  |" in summary
    assert "| clip_td | 5% | val | vqa_acc | 52.00 +- 2.83 | 2 | +10.00 |" in summary
    assert f"- `{old}`: 2 rows added, 1 already here (kept this folder's; 1 of them differ)" in summary
    with pytest.raises(InputError, match=r"nowhere: no results.csv to include"):
        report(new, include=[tmp_path / "nowhere"])


def test_oversubscription_warning_only_when_automatic_threads_overfill_a_busy_machine():
    from clip_td.app.sweep import oversubscription_warning

    # 2 cores, one run with both threads: fine on an idle machine (0.3 + 2 <= 2.5) ...
    assert oversubscription_warning(0.3, 2, 1, 2) is None
    # ... not beside four single-thread trainers (4 + 2 > 2.5)
    msg = oversubscription_warning(4.0, 2, 1, 2)
    assert msg is not None and "load average is 4.0 on 2 cores" in msg and "threads=1" in msg
    assert oversubscription_warning(1.0, 2, 1, 2) is not None  # 1 + 2 = 3 > 2.5
    assert oversubscription_warning(4.0, 2, 2, 1) is None  # one thread a run: nothing to lower
    assert oversubscription_warning(6.0, 16, 2, 8) is not None and oversubscription_warning(0.4, 16, 2, 8) is None


def test_included_rows_the_grid_does_not_list_are_asked_for_the_grids_seeds(tmp_path):
    """An included row with extra keys and 2 of the task's 3 seeds is marked "2 of 3", like a grid
    row; a task the grid does not hold asks nothing."""
    from clip_td.app.sweep import SweepConfig, ask_unlisted, grid_status
    from clip_td.base.config import save_config

    grid = GridConfig(tasks=["vqa"], methods=["none"], fractions=[0.05], seeds=[0, 1, 2])
    save_config(OmegaConf.structured(SweepConfig(output_dir=str(tmp_path), grid=grid)), tmp_path)
    for seed in (0, 1, 2):
        _write_run(tmp_path, "vqa", "none", 0.05, seed, {"val": {"vqa_acc": 40.0 + seed}})
    other = tmp_path / "other"
    other.mkdir()
    lines = ["task,method,train_fraction,seed,split,metric,value"]
    lines += [f"vqa,clip_td[method.rho=0.5],0.05,{s},val,vqa_acc,{v}" for s, v in ((0, 50.0), (1, 54.0))]
    lines += [f"snli_ve,none,0.05,{s},val,accuracy,60.0" for s in (0, 1)]
    (other / "results.csv").write_text("\n".join(lines) + "\n")
    summary = report(tmp_path, include=[other])["summary"].read_text()
    # 52 +- 2.83 over seeds 0-1 of the 3 the grid asks of vqa; gain 52 - 41 = +11
    assert "| clip_td[method.rho=0.5] | 5% | val | vqa_acc | 52.00 +- 2.83 | 2 of 3 \u2020 | +11.00 |" in summary
    assert "| none | 5% | val | accuracy | 60.00 +- 0.00 | 2 |" in summary  # snli_ve: not in the grid
    status = grid_status(tmp_path)
    assert ask_unlisted(status, [("vqa", "none", 0.05), ("vqa", "x", 0.05), ("snli_ve", "none", 0.05)]) == [
        ("vqa", "x", 0.05)]
    assert status.seeds[("vqa", "x", 0.05)] == [0, 1, 2]


def test_a_grid_cell_an_include_covers_is_not_listed_missing(tmp_path):
    """Missing runs lists the grid's cells that neither a run of this folder nor an included
    results.csv holds: re-rendering a folder from new runs plus its committed rows lists only the
    cells that are truly absent."""
    from clip_td.app.sweep import SweepConfig
    from clip_td.base.config import save_config

    grid = GridConfig(tasks=["vqa"], methods=["none"], fractions=[0.05], seeds=[0, 1, 2])
    save_config(OmegaConf.structured(SweepConfig(output_dir=str(tmp_path), grid=grid)), tmp_path)
    _write_run(tmp_path, "vqa", "none", 0.05, 0, {"val": {"vqa_acc": 40.0}})
    summary = report(tmp_path)["summary"].read_text()
    assert "2 of 3 grid cells have no complete metrics.json" in summary
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("task,method,train_fraction,seed,split,metric,value\n"
                                       "vqa,none,0.05,1,val,vqa_acc,44.0\n")
    summary = report(tmp_path, include=[other])["summary"].read_text()
    assert "1 of 3 grid cells have no complete metrics.json" in summary
    assert "| vqa | none | 5% | 2 | not run (or its metrics.json is incomplete) |" in summary
    assert "| vqa | none | 5% | 1 |" not in summary
    assert "| none | 5% | val | vqa_acc | 42.00 +- 2.83 | 2 of 3 \u2020 |" in summary
    assert cli_main(["report", str(tmp_path), "--include", str(other)]) == 1  # seed 2 is still absent
    (other / "results.csv").write_text("task,method,train_fraction,seed,split,metric,value\n"
                                       "vqa,none,0.05,1,val,vqa_acc,44.0\nvqa,none,0.05,2,val,vqa_acc,45.0\n")
    assert cli_main(["report", str(tmp_path), "--include", str(other)]) == 0
    assert "## Missing runs" not in (tmp_path / "summary.md").read_text()
