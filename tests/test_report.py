"""``vidgan report``: fake run and sweep folders in tmp_path, the HTML parsed with html.parser."""

from __future__ import annotations

import json
import math
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from vidgan_cli import cli, report
from vidgan_cli.svg import decimate, nice_range, svg_line_chart

TICK_STEPS = [50, 100, 150, 200, 250]
CONFIG = "seed: 0\ndataset:\n  name: '<script>alert(1)</script> & co'\n"


class Page(HTMLParser):
    """Start tags with their attributes, the text of <pre> blocks and the cells of every table."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self.pre: list[str] = []
        self.captions: list[str] = []
        self._table = self._row = self._cell = None
        self._part, self._in = "rows", None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), {"head": [], "rows": []})
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "rows"
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table[self._part].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("pre", "figcaption"):
            self._in = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
        elif tag == "pre":
            self.pre.append("".join(self._in))
        elif tag == "figcaption":
            self.captions.append("".join(self._in))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in is not None:
            self._in.append(data)

    def find(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]

    def polylines(self) -> dict[str, int]:
        """Series name -> number of coordinates (the last chart wins for a name)."""
        return {a["data-series"]: len(a["points"].split()) for a in self.find("polyline")}


def write_run(run: Path, *, ticks=TICK_STEPS, evals=((100, 0.5, 30.0), (200, 0.875, 12.5)),
              samples=(1000, 50, 250), summary: dict | None = None, overrides=("loss=hinge",),
              extra_lines: tuple[str, ...] = ()) -> Path:
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(CONFIG)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    lines = [json.dumps({"step": s, "d_loss": 1.0 + s / 1000, "g_loss": 2.0 - s / 1000,
                         "clips_per_s": 40.0 + s % 7, "sec_per_step": 0.1, "data_wait": 0.01,
                         "lr_G": 2e-4, "lr_D": 2e-4, "time": s / 10}) for s in ticks]
    lines += [json.dumps({"step": s, "eval/shapes/class_acc": acc, "eval/shapes/fd": fd})
              for s, acc, fd in evals]
    (run / "metrics.jsonl").write_text("\n".join(sorted(lines, key=lambda x: json.loads(x)["step"])
                                                 + list(extra_lines)) + "\n")
    (run / "samples").mkdir()
    for step in samples:
        for ext in ("mp4", "gif", "png"):
            (run / "samples" / f"step_{step:07d}.{ext}").write_bytes(b"not really a video")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps({"run_dir": str(run), **summary}))
    return run


def completed(step=250, **final) -> dict:
    return {"status": "completed", "step": step, "seconds": 12.0, "steps_per_s": step / 12.0,
            "final": {"step": step, "d_loss": 1.25, "g_loss": 1.75, "clips_per_s": 44.0, **final},
            "best": None, "checkpoints": ["checkpoints/last.ckpt"]}


# --- single run ---------------------------------------------------------------------------------------

def test_run_page_has_curves_with_one_point_per_metric_row(tmp_path, capsys):
    run = write_run(tmp_path / "run", summary=completed(),
                    extra_lines=('{"step": 300, "d_loss": 1.3', "", "[1, 2]"))
    report.main([str(run)])
    assert capsys.readouterr().out.strip() == f"wrote {run / 'report.html'}"
    page = Page((run / "report.html").read_text())
    counts = page.polylines()
    assert counts["d_loss"] == counts["g_loss"] == counts["clips_per_s"] == len(TICK_STEPS)
    assert counts["shapes/class_acc"] == counts["shapes/fd"] == 2
    titles = [a["aria-label"] for a in page.find("svg")]
    assert titles == ["losses", "throughput (clips/s)", "eval/shapes/class_acc", "eval/shapes/fd"]
    # the truncated last line and the JSON that is not an object are skipped and noted; blanks are not
    assert "skipped 2 malformed line(s) in metrics.jsonl" in (run / "report.html").read_text()


def test_videos_link_to_existing_files_in_step_order(tmp_path):
    run = write_run(tmp_path / "run")
    for out in (run / "report.html", tmp_path / "elsewhere" / "deep" / "page.html"):
        report.main([str(run), "-o", str(out)])
        page = Page(out.read_text())
        srcs = [a["src"] for tag in ("video", "source") for a in page.find(tag) if "src" in a]
        assert len(srcs) == 3
        assert all((out.parent / unquote(src)).is_file() for src in srcs)
        assert [Path(src).name for src in srcs] == [f"step_{s:07d}.mp4" for s in (50, 250, 1000)]
        assert [c for c in page.captions if c.startswith("step")] == ["step 50", "step 250",
                                                                      "step 1000"]
        images = [a["src"] for a in page.find("img")] + [a["poster"] for a in page.find("video")]
        assert all((out.parent / unquote(src)).is_file() for src in images)
        assert images[3].endswith("step_0001000.gif")  # the latest grid as a still fallback
        assert all({"muted", "loop", "controls"} <= a.keys() for a in page.find("video"))


def test_eval_table_holds_latest_training_eval_and_eval_json(tmp_path):
    run = write_run(tmp_path / "run", summary=completed())
    (run / "eval.json").write_text(json.dumps({"metrics": {"shapes/class_acc": 0.9375, "fvd": 321.5},
                                               "protocol": {"num_samples": 256}}))
    report.main([str(run)])
    table = Page((run / "report.html").read_text()).tables["eval-table"]
    assert table["head"] == [["metric", "during training", "at step", "vidgan evaluate (eval.json)"]]
    assert table["rows"] == [["fvd", "—", "—", "321.5"],
                             ["shapes/class_acc", "0.875", "200", "0.9375"],
                             ["shapes/fd", "12.5", "200", "—"]]


def test_config_and_strings_are_html_escaped(tmp_path):
    run = write_run(tmp_path / "run", overrides=("dataset.name=<b>x</b>",),
                    summary={"status": "failed", "error": "ValueError: <img src=x onerror=1>"})
    report.main([str(run)])
    text = (run / "report.html").read_text()
    page = Page(text)
    assert "<script>" not in text and "<b>x</b>" not in text and "<img src=x" not in text
    assert page.pre == [CONFIG]  # escaped on the page, the original text once parsed
    assert page.find("script") == [] and page.find("b") == []
    summary = dict(page.tables["summary-table"]["rows"])
    assert summary["status"] == "failed" and summary["error"] == "ValueError: <img src=x onerror=1>"


def test_missing_pieces_are_reported_not_fatal(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    (run / "summary.json").write_text("{not json")
    report.main([str(run)])
    text = (run / "report.html").read_text()
    for phrase in ("no samples yet", "no metrics yet", "no evaluation yet", "no .hydra/config.yaml",
                   "no summary.json yet", "summary.json is unreadable"):
        assert phrase in text


def test_vidgan_report_through_the_cli_is_offline_and_leaves_no_temp_files(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", summary=completed())
    monkeypatch.setitem(cli.SUBCOMMANDS, "report", ("vidgan_cli.report", "HTML report of a run"))
    monkeypatch.setattr(sys, "argv", ["vidgan"])  # cli.main rewrites it for the subcommand
    cli.main(["report", str(run)])
    text = (run / "report.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".hydra"]


# --- sweep ----------------------------------------------------------------------------------------

def write_sweep(root: Path) -> Path:
    (root).mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - loss=hinge,lsgan\n"
                                        "    - optimizer.lr=1e-4,2e-4\n")
    grid = [("hinge", "1e-4"), ("hinge", "2e-4"), ("lsgan", "1e-4"), ("lsgan", "2e-4")]
    for job, (loss, lr) in enumerate(grid):
        overrides = (f"loss={loss}", f"optimizer.lr={lr}")
        if job == 2:
            write_run(root / str(job), ticks=[50], evals=(), samples=(), overrides=overrides,
                      summary={"status": "failed", "error": "RuntimeError: <nan> in D"})
        else:
            summary = completed(**{"eval/shapes/class_acc": 0.25 * (job + 1)})
            write_run(root / str(job), overrides=overrides, summary=summary)
    return root


def test_sweep_page_has_one_sortable_row_per_job(tmp_path):
    sweep = write_sweep(tmp_path / "multirun" / "2024-01-01" / "12-00-00")
    report.main([str(sweep)])
    text = (sweep / "report.html").read_text()
    page = Page(text)
    table = page.tables["jobs"]
    header = table["head"][0]
    assert header[:4] == ["job", "overrides", "status", "step"] and "shapes/class_acc" in header
    rows = [dict(zip(header, row, strict=True)) for row in table["rows"]]
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["overrides"] for r in rows] == ["loss=hinge optimizer.lr=1e-4",
                                              "loss=hinge optimizer.lr=2e-4",
                                              "loss=lsgan optimizer.lr=1e-4",
                                              "loss=lsgan optimizer.lr=2e-4"]
    assert [r["status"] for r in rows] == ["completed", "completed", "failedRuntimeError: <nan> in D",
                                           "completed"]  # the error under the status, escaped
    assert "<nan>" not in text
    assert [r["shapes/class_acc"] for r in rows] == ["0.25", "0.5", "—", "1"]
    assert [r["d_loss"] for r in rows] == ["1.25", "1.25", "1.05", "1.25"]  # failed: last logged
    assert len(page.find("polyline")) == 8  # a d_loss and a g_loss sparkline per job
    assert "table.sortable th" in text and page.find("table")[0]["class"] == "sortable"
    links = [a["href"] for a in page.find("a")]
    assert links == ["0/", "1/", "2/", "3/"] and all((sweep / h).is_dir() for h in links)
    assert "http://" not in text and "https://" not in text
    assert "loss=hinge,lsgan" in text


def test_sweep_is_recognised_without_multirun_yaml(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    (sweep / "multirun.yaml").unlink()
    assert report.folder_kind(sweep) == "sweep"
    assert report.folder_kind(sweep / "0") == "run"


# --- errors and pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "no such folder"),
    (lambda p: p, "is neither a run nor a multirun folder"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
])
def test_bad_path_exits_2_naming_what_was_expected(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(make(tmp_path))])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "expected a run folder" in err and "multirun" in err
    assert not (tmp_path / "report.html").exists()


def test_read_metrics_counts_bad_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "d_loss": 0.5}\n\n{"step": "x"}\nnot json\n{"step": 2, "d_loss": NaN}\n')
    rows, bad = report.read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2] and bad == 2
    assert report.read_metrics(tmp_path / "missing.jsonl") == ([], 0)


def test_line_chart_skips_non_finite_points_and_handles_no_data():
    chart = Page(svg_line_chart({"a": [(0, 1.0), (1, math.nan), (2, 3.0)], "b": [(0, 2.0)]}, "t"))
    assert chart.polylines() == {"a": 2, "b": 1}
    assert "no data yet" in svg_line_chart({"a": []}, "empty")
    lo, hi, ticks = nice_range(0.13, 0.97, 5)
    assert lo <= 0.13 and hi >= 0.97 and 3 <= len(ticks) <= 7
    assert nice_range(5.0, 5.0)[0] < 5.0 < nice_range(5.0, 5.0)[1]


def test_long_series_are_thinned_keeping_their_extremes():
    points = [(float(i), math.sin(i / 50)) for i in range(10_000)]
    points[4321] = (4321.0, 9.0)  # a spike
    kept = decimate(points, 2000)
    assert len(kept) <= 2000 and kept == sorted(kept) and (4321.0, 9.0) in kept
    assert min(y for _, y in kept) == min(y for _, y in points)
    assert Page(svg_line_chart({"a": points}, "t", max_points=500)).polylines()["a"] <= 500
