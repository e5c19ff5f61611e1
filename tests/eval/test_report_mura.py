"""report.html's "MURA metric" section: a table per metrics.json block that is present (and
none for an absent one), the threshold sweep of study kappa with the operating point marked,
and study kappa by number of views."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from bonify.vocabulary import REGIONS
from eval import figures
from eval.metrics import compute_metrics
from eval.predictions import make_predictions
from eval.report import render_report

RATE = re.compile(r"^(n/a|-?\d\.\d{3})$")
THRESHOLD = re.compile(r"^(n/a|\d\.\d{4})$")
COUNT = re.compile(r"^\d{1,3}(,\d{3})*$")
OPERATING_THRESHOLD = 0.45


class Tables(HTMLParser):
    """{h3 heading: [tables after it, each a list of rows of cell texts]} of one section."""

    def __init__(self, text: str):
        super().__init__()
        self.by_heading: dict[str, list] = {}
        self._heading, self._in_heading, self._cell = "", False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "h3":
            self._heading, self._in_heading = "", True
        elif tag == "table":
            self.by_heading.setdefault(self._heading, []).append([])
        elif tag == "tr":
            self.by_heading[self._heading][-1].append([])
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h3":
            self._in_heading = False
        elif tag in ("th", "td") and self._cell is not None:
            self.by_heading[self._heading][-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._in_heading:
            self._heading += data
        elif self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def evaluation():
    """(Predictions, metrics, tables): 7 regions x 12 studies of 1-4 images, with the blocks
    the evaluator adds beside compute_metrics' (operating point, fitted, compare, members)."""
    rng = np.random.default_rng(5)
    paths, labels, probs = [], [], []
    for index, region in enumerate(REGIONS):
        for patient in range(12):
            abnormal = patient % 2
            for image in range(1 + patient % 4):
                suffix = "positive" if abnormal else "negative"
                paths.append(f"MURA-v1.1/valid/XR_{region}/patient{100 * index + patient:05d}/"
                             f"study1_{suffix}/image{image + 1}.png")  # fmt: skip
                label = 2 * index + abnormal
                labels.append(label)
                row = rng.random(14) * 0.3
                row[label if rng.random() < 0.7 else label ^ 1] += 1.0
                probs.append(row / row.sum())
    predictions = make_predictions(paths, labels, np.asarray(probs)).sorted_by_path()
    metrics, tables = compute_metrics(predictions, 0, 0, threshold=OPERATING_THRESHOLD)
    metrics["operating_point"] = {
        "threshold": OPERATING_THRESHOLD, "source": "--threshold", "temperature": 1.0,
        "temperature_source": "default",
        "fitted": {"threshold": 0.4375, "kappa_at_threshold": 0.71, "kappa_at_default_threshold":
                   0.62, "youden_threshold": 0.4125, "youden_j": 0.55, "temperature": 1.3,
                   "ece_before": 0.12, "ece_after": 0.05,
                   "fitted_on": {"split": "validation", "n_studies": 84}},
    }  # fmt: skip
    metrics["comparison"] = {
        "top1_accuracy": {"delta": 0.0125, "ci95": [-0.004, 0.031], "significant": False,
                          "this": 0.7, "other": 0.6875},
        "study_kappa": {"delta": 0.05, "ci95": [0.01, 0.09], "significant": True, "this": 0.8,
                        "other": 0.75},
    }  # fmt: skip
    metrics["compared_with"] = {"path": "other/predictions.csv", "resamples": 200}
    metrics["members"] = [
        {"model": f"run{index}/final.keras", "top1_accuracy": 0.6 + index / 100,
         "cohen_kappa": 0.5, "study_kappa": 0.7, "study_auroc": 0.9}
        for index in range(2)
    ]  # fmt: skip
    return predictions, metrics, tables


@pytest.fixture(scope="module")
def section(evaluation):
    predictions, metrics, tables = evaluation
    report = render_report(metrics, figures.make_figures(predictions, metrics, tables))
    start = report.index("id='mura-metric'")
    return report[start : report.index("<h2", start + 1)]


def test_each_block_is_a_table_under_its_heading(section, evaluation):
    metrics = evaluation[1]
    tables = Tables(section).by_heading
    study = metrics["study_level"]

    (call,) = tables["Operating point"]
    assert call[0] == ["Study call", "At 0.5", "At the operating point 0.4500"]
    assert call[1] == ["Cohen's κ", f"{study['kappa']:.3f}",
                       f"{study['at_operating_point']['kappa']:.3f}"]  # fmt: skip

    (aggregations,) = tables["Study P(abnormal): mean or max of the images"]
    assert [row[0] for row in aggregations[1:]] == ["Mean of the images (MURA's rule)",
                                                    "Max of the images"]  # fmt: skip
    assert aggregations[2][1] == f"{study['aggregations']['max']['kappa']:.3f}"

    (views,) = tables["By number of images in the study"]
    assert [row[:2] for row in views[1:]] == [["1 image", "21"], ["2 images", "21"],
                                              ["3 images", "21"], ["4+ images", "21"]]  # fmt: skip

    overall, per_region = tables["Region-given abnormality"]
    assert overall[2][1] == f"{metrics['region_given']['study_level']['kappa']:.3f}"
    assert [row[0] for row in per_region[1:]] == list(REGIONS)

    fitted_thresholds, fitted_before_after = tables["Fitted on this split"]
    assert fitted_thresholds[1][1:] == ["0.4375", "0.710"]
    assert fitted_before_after[1][1:] == ["0.620", "0.710"]

    (comparison,) = tables["Paired comparison"]
    assert comparison[1] == ["Top-1 accuracy (14 classes)", "0.700", "0.688", "0.013",
                             "-0.004 to 0.031", "no"]  # fmt: skip
    assert comparison[2][-1] == "yes"

    (members,) = tables["Ensemble members"]
    assert [row[0] for row in members[1:]] == ["run0/final.keras", "run1/final.keras",
                                               "Ensemble (mean of the members' probabilities)"]  # fmt: skip
    assert members[-1][1] == f"{metrics['top1_accuracy']:.3f}"


def test_numbers_have_one_format_per_column(section):
    for heading, tables in Tables(section).by_heading.items():
        for table in tables:
            header, rows = table[0], table[1:]
            for index, name in enumerate(header[1:], start=1):
                if name in ("Significant", "95% interval"):
                    continue
                pattern = COUNT if name == "Studies" else THRESHOLD if name == "Threshold" else RATE
                for row in rows:
                    assert pattern.match(row[index]), (heading, name, row[index])


def test_absent_blocks_are_left_out(evaluation):
    predictions, metrics, tables = evaluation
    bare = {key: value for key, value in metrics.items()
            if key not in ("operating_point", "comparison", "compared_with", "members",
                           "region_given")}  # fmt: skip
    bare["study_level"] = {key: value for key, value in metrics["study_level"].items()
                           if key not in ("aggregations", "by_views", "at_operating_point")}  # fmt: skip
    report = render_report(bare, {})
    assert "id='mura-metric'" in report
    for heading in ("Operating point", "Fitted on this split", "mean or max", "By number of",
                    "Region-given", "Paired comparison", "Ensemble members"):  # fmt: skip
        assert heading not in report, heading


@pytest.fixture
def sweep(evaluation):
    figure = figures.threshold_sweep(evaluation[1], evaluation[2]["studies"])
    yield figure
    plt.close(figure)


def _study_truth_and_mean(predictions):
    truth, scores = {}, {}
    for study, label, row in zip(predictions.study_ids, predictions.true_labels,
                                 predictions.probs, strict=True):  # fmt: skip
        truth[study] = label % 2
        scores.setdefault(study, []).append(row[1::2].sum())
    studies = sorted(truth)
    return np.array([truth[s] for s in studies]), np.array([np.mean(scores[s]) for s in studies])


def test_sweep_is_study_kappa_by_threshold_by_hand(sweep, evaluation):
    predictions, metrics, _ = evaluation
    axes = sweep.axes[0]
    mean_curve = next(line for line in axes.lines if "mean of the images" in line.get_label())
    truth, scores = _study_truth_and_mean(predictions)
    x, y = mean_curve.get_xdata(), mean_curve.get_ydata()
    for threshold in (0.3, 0.5, 0.7):
        index = int(np.argmin(np.abs(x - threshold)))
        expected = cohen_kappa_score(truth, (scores >= x[index]).astype(int))
        assert y[index] == pytest.approx(expected), threshold
    assert y[int(np.argmin(np.abs(x - 0.5)))] == pytest.approx(metrics["study_level"]["kappa"])


def test_sweep_marks_the_operating_point_and_the_fitted_threshold(sweep, evaluation):
    metrics = evaluation[1]
    lines = {line.get_label(): line for line in sweep.axes[0].lines}
    point = lines["operating point 0.450 (--threshold)"]
    assert list(point.get_xdata()) == [OPERATING_THRESHOLD] * 2
    assert list(lines["fitted on this split 0.438"].get_xdata()) == [0.4375] * 2
    # The kappa at the operating point is marked on the curve.
    markers = [line for line in sweep.axes[0].lines if line.get_marker() == "o"]
    assert [(m.get_xdata()[0], m.get_ydata()[0]) for m in markers] == [
        (OPERATING_THRESHOLD, metrics["study_level"]["at_operating_point"]["kappa"])
    ]
    legend = [text.get_text() for text in sweep.axes[0].get_legend().get_texts()]
    assert len(legend) == 5  # both curves, 0.5, the operating point, the fitted threshold


def test_kappa_by_views_bars_are_the_by_views_block(evaluation):
    metrics = evaluation[1]
    figure = figures.kappa_by_views(metrics)
    axes = figure.axes[0]
    by_views = metrics["study_level"]["by_views"]
    heights = [bar.get_height() for bar in axes.patches]
    assert heights == pytest.approx([by_views[group]["kappa"] for group in ("1", "2", "3", "4+")])
    labels = [text.get_text() for text in axes.texts]
    assert all(f"{by_views[group]['n_studies']} studies" in label
               for group, label in zip(("1", "2", "3", "4+"), labels, strict=True))  # fmt: skip
    plt.close(figure)


def test_mura_figures_sit_in_the_mura_section_only(evaluation):
    predictions, metrics, tables = evaluation
    report = render_report(metrics, figures.make_figures(predictions, metrics, tables))
    for name in figures.MURA_FIGURES:
        assert report.count(f"id='{name}'") == 1
        assert report.index("id='mura-metric'") < report.index(f"id='{name}'")
        assert report.index(f"id='{name}'") < report.index("<h2>Figures</h2>")
