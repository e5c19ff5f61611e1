"""report.html and its figures as a person reads them: a header saying what was evaluated,
human column headers, one number format per kind of number, a legend for every colour that
carries meaning and none covering data, integer ticks on counts, images per reliability bin."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pytest

import bonify
from bonify.vocabulary import REGIONS
from eval import figures
from eval.__main__ import main
from eval.metrics import compute_metrics
from eval.predictions import make_predictions
from eval.report import render_report

RATE = re.compile(r"^(n/a|-?\d\.\d{3})$")
RATE_WITH_INTERVAL = re.compile(r"^-?\d\.\d{3}( \(-?\d\.\d{3}–-?\d\.\d{3}\))?$")
COUNT = re.compile(r"^\d{1,3}(,\d{3})*$")
SNAKE_CASE = re.compile(r"[a-z0-9]_[a-z0-9]")


class ReportPage(HTMLParser):
    """tables: one list of rows per <table>, a row being [(tag, text)]; by_id: element id ->
    its text (for cells)."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.by_id = [], {}
        self._cell, self._cell_id = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("th", "td"):
            self._cell, self._cell_id = [], dict(attrs).get("id")

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            text = "".join(self._cell).strip()
            self.tables[-1][-1].append((tag, text))
            if self._cell_id:
                self.by_id[self._cell_id] = text
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def column_tables(self) -> list[tuple[list[str], list[list[str]]]]:
        """(header texts, body rows of td texts) of every table with a header row."""
        result = []
        for rows in self.tables:
            if rows and all(tag == "th" for tag, _ in rows[0]):
                result.append(([text for _, text in rows[0]],
                               [[text for _, text in row] for row in rows[1:]]))  # fmt: skip
        return result


@pytest.fixture
def evaluation(synthetic_rows_factory):
    """(Predictions, metrics, tables) of 168 synthetic images in 84 studies of 7 regions."""
    studies = [(region, 100 + 20 * index + p, 1, p % 2, 1 + p % 3)
               for index, region in enumerate(REGIONS) for p in range(12)]  # fmt: skip
    paths, labels, probs = synthetic_rows_factory(studies, np.random.default_rng(3), 0.75)
    predictions = make_predictions(paths, labels, probs).sorted_by_path()
    metrics, tables = compute_metrics(predictions, 50, 0)
    return predictions, metrics, tables


@pytest.fixture
def figure_objects(evaluation):
    made = figures.figure_objects(*evaluation)
    yield made
    for figure in made.values():
        plt.close(figure)


@pytest.fixture
def predictions_report(evaluation, predictions_csv_factory, tmp_path):
    """(report.html text, the predictions file) of `bonify-eval --predictions`."""
    predictions = evaluation[0]
    csv = predictions_csv_factory(predictions.image_paths, predictions.true_labels,
                                  predictions.probs)  # fmt: skip
    argv = ["--predictions", str(csv), "--output_dir", str(tmp_path / "eval"),
            "--bootstrap_resamples", "50"]  # fmt: skip
    assert main(argv) == 0
    return (tmp_path / "eval" / "report.html").read_text(encoding="utf-8"), csv


def _legend_texts(axes) -> list[str]:
    legend = axes.get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def test_header_names_version_time_and_the_predictions_file_with_its_sha256(predictions_report):
    text, csv = predictions_report
    page = ReportPage(text)
    assert page.by_id["bonify-version"] == bonify.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.by_id["created"])
    assert page.by_id["predictions"] == str(csv)
    assert page.by_id["predictions-sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert page.by_id["evaluated"] == "168 images in 84 studies"


def test_report_loads_nothing_from_the_network(predictions_report):
    text, _ = predictions_report
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)
    assert "http://" not in text and "https://" not in text


def test_table_headers_are_words_not_metric_keys(evaluation):
    page = ReportPage(render_report(evaluation[1], {}))
    tables = page.column_tables()
    assert len(tables) == 10
    for header, _ in tables:
        for cell in header:
            assert not SNAKE_CASE.search(cell) and cell[:1].isupper(), cell


def test_every_column_has_one_number_format(evaluation):
    page = ReportPage(render_report(evaluation[1], {}))
    count_columns = {"Images", "Studies", "Images (support)"}
    for header, rows in page.column_tables():
        for index, name in enumerate(header[1:], start=1):
            if header[0] == "True class" and index == 1:
                continue  # the predicted class name
            pattern = COUNT if name in count_columns else RATE
            if name.startswith("Value (95% CI"):
                pattern = RATE_WITH_INTERVAL
            for row in rows:
                assert pattern.match(row[index]), (name, row[index])


def test_summary_gives_intervals_as_value_and_range(evaluation):
    metrics = evaluation[1]
    page = ReportPage(render_report(metrics, {}))
    header, rows = page.column_tables()[0]
    values = dict(rows)
    low, high = (metrics["bootstrap"]["top1_accuracy"][key] for key in ("low", "high"))
    assert values["Top-1 accuracy (14 classes)"] == (
        f"{metrics['top1_accuracy']:.3f} ({low:.3f}–{high:.3f})"
    )
    assert values["Top-3 accuracy"] == f"{metrics['top3_accuracy']:.3f}"


def test_per_class_f1_has_a_legend_for_normal_abnormal_and_macro(figure_objects):
    axes = figure_objects["per_class_f1.png"].axes[0]
    texts = _legend_texts(axes)
    assert "normal class" in texts and "abnormal class" in texts
    assert any(text.startswith("macro F1") for text in texts)
    colours = {tuple(bar.get_facecolor()) for bar in axes.patches}
    assert len(colours) == 2  # the two colours the legend names


def test_legends_sit_outside_the_axes(figure_objects):
    for name, figure in figure_objects.items():
        figure.canvas.draw()
        for axes in figure.axes:
            legend = axes.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent()
            inside = axes.get_window_extent()
            overlap_width = min(box.x1, inside.x1) - max(box.x0, inside.x0)
            overlap_height = min(box.y1, inside.y1) - max(box.y0, inside.y0)
            assert overlap_width <= 1 or overlap_height <= 1, name


def test_every_coloured_series_is_in_a_legend(figure_objects):
    expected = {
        "region_accuracy.png": 2,
        "normal_abnormal_accuracy.png": 2,
        "confidence_histograms.png": 2,
        "class_counts.png": 2,
        "reliability_diagram.png": 3,
        "per_class_f1.png": 3,
    }
    for name, entries in expected.items():
        assert len(_legend_texts(figure_objects[name].axes[0])) == entries, name


def _is_integer_axis(ticks) -> bool:
    return len(ticks) > 1 and all(float(tick).is_integer() for tick in ticks)


def test_count_axes_have_integer_ticks(figure_objects):
    assert _is_integer_axis(figure_objects["confidence_histograms.png"].axes[0].get_yticks())
    assert _is_integer_axis(figure_objects["class_counts.png"].axes[0].get_yticks())
    assert _is_integer_axis(figure_objects["confused_pairs.png"].axes[0].get_xticks())


def test_confusion_colour_bar_says_it_is_a_share_not_a_count(figure_objects):
    colour_bar_axes = figure_objects["confusion_matrix.png"].axes[1]
    assert "share of the true class" in colour_bar_axes.get_ylabel()


def test_reliability_diagram_shows_the_images_of_each_bin(figure_objects, evaluation):
    metrics = evaluation[1]
    axes = figure_objects["reliability_diagram.png"].axes[0]
    labels = [text.get_text() for text in axes.texts]
    counts = [str(row["count"]) for row in metrics["calibration"]["bins"] if row["count"]]
    assert labels == counts
    assert sum(int(label) for label in labels) == metrics["n_images"]


def test_make_figures_renders_every_listed_figure_as_png(evaluation):
    rendered = figures.make_figures(*evaluation)
    assert list(rendered) == list(figures.FIGURES)
    assert all(png.startswith(b"\x89PNG") for png in rendered.values())
    assert plt.get_fignums() == []  # every figure closed after rendering
