"""The evaluation figures (matplotlib, Agg backend: no display needed).

Each figure function takes metrics/tables from `eval.metrics.compute_metrics` and returns a
matplotlib Figure (tests inspect its legend, ticks and labels); `make_figures` renders them
all to PNG bytes, keyed by file name, in report order. Legends sit outside the axes, so they
never hide a bar or a curve, and every axis that counts images has integer ticks.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from bonify.vocabulary import CLASS_NAMES, NUM_CLASSES, REGIONS  # noqa: E402
from eval.metrics import row_normalized  # noqa: E402
from eval.predictions import Predictions  # noqa: E402

#: File name -> caption, in the order the report shows them.
FIGURES: dict[str, str] = {
    "confusion_matrix.png": "Row-normalised 14x14 confusion matrix (rows = true class)",
    "per_class_f1.png": "F1 per class (normal and abnormal classes coloured apart)",
    "region_accuracy.png": "14-class accuracy per body region",
    "normal_abnormal_accuracy.png": "Accuracy on normal vs abnormal images per region",
    "confidence_histograms.png": "Top-1 confidence of correct vs wrong predictions",
    "class_counts.png": "True vs predicted class counts",
    "reliability_diagram.png": "Reliability diagram (top-1 confidence; images per bin above each bar)",
    "study_roc.png": "Study-level ROC of the abnormality call per region",
    "confused_pairs.png": "Most confused class pairs",
    "threshold_sweep.png": "Study Cohen's kappa by decision threshold, operating point marked",
    "kappa_by_views.png": "Study Cohen's kappa by the study's number of images (views)",
}
#: The figures shown in report.html's "MURA metric" section rather than with the others.
MURA_FIGURES = ("threshold_sweep.png", "kappa_by_views.png")
#: Thresholds at which the sweep evaluates the study call (steps of 0.005).
SWEEP_THRESHOLDS = np.linspace(0.0, 1.0, 201)

#: One colour per abnormality status, the same in every figure that separates them.
NORMAL_COLOR = "tab:blue"
ABNORMAL_COLOR = "tab:red"


def to_png(figure: Figure) -> bytes:
    """PNG bytes of `figure` (closed afterwards). bbox_inches="tight" keeps the legends
    placed outside the axes inside the image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _value(value) -> float:
    return 0.0 if value is None else float(value)


def _legend_above(axes, columns: int) -> None:
    # Above the axes, in one row: it can never cover a bar, a point or a curve.
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=columns, frameon=False)


def _integer_ticks(axis) -> None:
    axis.set_major_locator(MaxNLocator(integer=True))


def confusion_heatmap(confusion: np.ndarray) -> Figure:
    normalized = row_normalized(confusion)
    figure, axes = plt.subplots(figsize=(10, 8.5))
    image = axes.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(NUM_CLASSES), CLASS_NAMES, fontsize=8)
    for row in range(NUM_CLASSES):
        for column in range(NUM_CLASSES):
            if confusion[row, column]:
                value = normalized[row, column]
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if value > 0.5 else "black")  # fmt: skip
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046)
    colorbar.set_label("share of the true class's images (row sums to 1)")
    return figure


def per_class_f1(metrics: dict) -> Figure:
    figure, axes = plt.subplots(figsize=(10, 4.5))
    values = [_value(row["f1"]) for row in metrics["per_class"]]
    # Classes alternate normal, abnormal (label = 2 * region + abnormal).
    positions = np.arange(NUM_CLASSES)
    axes.bar(positions[0::2], values[0::2], color=NORMAL_COLOR, label="normal class")
    axes.bar(positions[1::2], values[1::2], color=ABNORMAL_COLOR, label="abnormal class")
    axes.set_xticks(positions, CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    macro = metrics["f1_macro"]
    axes.axhline(_value(macro), color="gray", linestyle="--",
                 label="macro F1" if macro is None else f"macro F1 ({macro:.3f})")  # fmt: skip
    _legend_above(axes, 3)
    return figure


def region_accuracy(metrics: dict) -> Figure:
    figure, axes = plt.subplots(figsize=(8, 4))
    values = [_value(metrics["per_region"][region]["accuracy"]) for region in REGIONS]
    bars = axes.bar(REGIONS, values, color="tab:green", label="region")
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_ylim(0, 1.1)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_ylabel("14-class accuracy")
    overall = metrics["top1_accuracy"]
    axes.axhline(overall, color="gray", linestyle="--", label=f"all images ({overall:.3f})")
    _legend_above(axes, 2)
    return figure


def normal_abnormal_accuracy(metrics: dict) -> Figure:
    figure, axes = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(REGIONS))
    for offset, key, color, label in ((-0.2, "normal_accuracy", NORMAL_COLOR, "normal images"),
                                      (0.2, "abnormal_accuracy", ABNORMAL_COLOR, "abnormal images")):  # fmt: skip
        values = [_value(metrics["per_region"][region][key]) for region in REGIONS]
        axes.bar(positions + offset, values, width=0.4, color=color, label=label)
    axes.set_xticks(positions, REGIONS)
    axes.set_ylim(0, 1)
    axes.set_ylabel("14-class accuracy")
    _legend_above(axes, 2)
    return figure


def confidence_histograms(predictions: Predictions) -> Figure:
    correct = predictions.pred_labels == predictions.true_labels
    figure, axes = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, 1, 26)
    # Side by side per bin, not overlaid: a blend of the two colours would be a third colour
    # without a legend entry.
    axes.hist([predictions.confidences[correct], predictions.confidences[~correct]], bins=bins,
              color=["tab:green", "tab:red"], label=[f"correct ({int(correct.sum())} images)",
                                                     f"wrong ({int((~correct).sum())} images)"])  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("images")
    _integer_ticks(axes.yaxis)
    _legend_above(axes, 2)
    return figure


def class_counts(predictions: Predictions) -> Figure:
    true = np.bincount(predictions.true_labels, minlength=NUM_CLASSES)
    predicted = np.bincount(predictions.pred_labels, minlength=NUM_CLASSES)
    figure, axes = plt.subplots(figsize=(10, 4.5))
    positions = np.arange(NUM_CLASSES)
    axes.bar(positions - 0.2, true, width=0.4, color="tab:gray", label="true class")
    axes.bar(positions + 0.2, predicted, width=0.4, color="tab:purple", label="predicted class")
    axes.set_xticks(positions, CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("images")
    _integer_ticks(axes.yaxis)
    _legend_above(axes, 2)
    return figure


def reliability_diagram(metrics: dict) -> Figure:
    bins = metrics["calibration"]["bins"]
    figure, axes = plt.subplots(figsize=(6, 5.5))
    filled = [row for row in bins if row["count"]]
    centers = [(row["lower"] + row["upper"]) / 2 for row in filled]
    width = bins[0]["upper"] - bins[0]["lower"]
    bars = axes.bar(centers, [row["accuracy"] for row in filled], width=width * 0.9, alpha=0.7,
                    label="accuracy of the bin", edgecolor="black")  # fmt: skip
    # How many images each bar stands on: a bar of 3 images says little.
    axes.bar_label(bars, labels=[str(row["count"]) for row in filled], fontsize=6.5, padding=2)
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    axes.plot(centers, [row["confidence"] for row in filled], "o", color="tab:red",
              label="mean confidence of the bin")  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.12)  # room for the count above a bar of accuracy 1
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"ECE = {metrics['calibration']['ece']:.3f}; images per bin above each bar",
                   fontsize=10, pad=42)  # fmt: skip
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2, frameon=False, fontsize=8)
    return figure


def study_roc(metrics: dict, studies) -> Figure:
    figure, axes = plt.subplots(figsize=(7.5, 5.5))
    groups = [("all", studies, metrics["study_level"]["auroc"])]
    groups += [(region, studies[studies["region"] == region],
                metrics["study_level"]["per_region"][region]["auroc"]) for region in REGIONS]  # fmt: skip
    for name, group, auroc in groups:
        if auroc is None:  # one class only: no curve (the report says why)
            continue
        fpr, tpr, _ = roc_curve(group["true_abnormal"], group["p_abnormal"])
        style = {"color": "black", "linewidth": 2.5} if name == "all" else {"linewidth": 1.2}
        axes.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})", **style)
    axes.plot([0, 1], [0, 1], color="gray", linestyle=":")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    if axes.get_legend_handles_labels()[0]:
        # To the right of the axes: curves of good models crowd the lower right corner.
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="studies")
    else:
        axes.set_title("no group has both normal and abnormal studies")
    return figure


def confused_pairs(metrics: dict) -> Figure:
    pairs = metrics["most_confused_pairs"]
    figure, axes = plt.subplots(figsize=(8, 0.4 * max(len(pairs), 3) + 1))
    labels = [f"{pair['true_class']} -> {pair['pred_class']}" for pair in pairs]
    bars = axes.barh(range(len(pairs)), [pair["count"] for pair in pairs], color="tab:orange")
    axes.bar_label(bars, fontsize=8, padding=2)
    axes.set_yticks(range(len(pairs)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("images (true class -> predicted class)")
    _integer_ticks(axes.xaxis)
    axes.margins(x=0.08)  # room for the count beside the longest bar
    if not pairs:
        axes.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=axes.transAxes)
    return figure


def threshold_sweep(metrics: dict, studies) -> Figure:
    from bonify.study_metrics import kappa_at_thresholds

    figure, axes = plt.subplots(figsize=(8, 4.5))
    truth = studies["true_abnormal"].to_numpy().astype(np.int64)
    curves = (("p_abnormal", "mean of the images (MURA's rule)", {"color": "black", "linewidth": 2}),
              ("p_abnormal_max", "max of the images", {"color": "tab:purple"}))  # fmt: skip
    for column, label, style in curves:
        # NaN where the call is all one class (kappa 0/0): the curve breaks there.
        kappas = kappa_at_thresholds(truth, studies[column].to_numpy(), SWEEP_THRESHOLDS)
        axes.plot(SWEEP_THRESHOLDS, kappas, label=f"study P(abnormal) = {label}", **style)
    axes.axvline(0.5, color="gray", linestyle=":", label="threshold 0.5")
    point = metrics.get("operating_point")
    if point is not None:
        kappa = metrics["study_level"].get("at_operating_point", {}).get("kappa")
        axes.axvline(point["threshold"], color="tab:red", linestyle="--",
                     label=f"operating point {point['threshold']:.3f} ({point['source']})")  # fmt: skip
        if kappa is not None:
            axes.plot([point["threshold"]], [kappa], "o", color="tab:red")
        fitted = point.get("fitted")
        if fitted is not None and fitted.get("threshold") is not None:
            axes.axvline(fitted["threshold"], color="tab:green", linestyle="-.",
                         label=f"fitted on this split {fitted['threshold']:.3f}")  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_xlabel("threshold on the study's P(abnormal) (abnormal when >=)")
    axes.set_ylabel("study Cohen's kappa")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2, frameon=False, fontsize=8)
    return figure


def kappa_by_views(metrics: dict) -> Figure:
    from bonify.study_metrics import VIEW_GROUPS

    by_views = metrics["study_level"]["by_views"]
    figure, axes = plt.subplots(figsize=(6.5, 4))
    values = [by_views[group]["kappa"] for group in VIEW_GROUPS]
    bars = axes.bar(VIEW_GROUPS, [_value(value) for value in values], color="tab:cyan",
                    label="study kappa (mean, threshold 0.5)")  # fmt: skip
    # How many studies each bar stands on, and why a bar is missing.
    axes.bar_label(bars, labels=[
        f"{'n/a' if value is None else f'{value:.3f}'}\n{by_views[group]['n_studies']} studies"
        for group, value in zip(VIEW_GROUPS, values, strict=True)], fontsize=8,
        padding=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    overall = metrics["study_level"]["kappa"]
    if overall is not None:
        axes.axhline(overall, color="gray", linestyle="--", label=f"all studies ({overall:.3f})")
    axes.set_ylim(min(0.0, *[_value(value) for value in values]), 1.2)  # room for the labels
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_xlabel("images in the study")
    axes.set_ylabel("study Cohen's kappa")
    _legend_above(axes, 2)
    return figure


def figure_objects(predictions: Predictions, metrics: dict, tables: dict) -> dict[str, Figure]:
    """File name -> matplotlib Figure for every figure in FIGURES (the caller closes them)."""
    figures = {
        "confusion_matrix.png": confusion_heatmap(tables["confusion"]),
        "per_class_f1.png": per_class_f1(metrics),
        "region_accuracy.png": region_accuracy(metrics),
        "normal_abnormal_accuracy.png": normal_abnormal_accuracy(metrics),
        "confidence_histograms.png": confidence_histograms(predictions),
        "class_counts.png": class_counts(predictions),
        "reliability_diagram.png": reliability_diagram(metrics),
        "study_roc.png": study_roc(metrics, tables["studies"]),
        "confused_pairs.png": confused_pairs(metrics),
        "threshold_sweep.png": threshold_sweep(metrics, tables["studies"]),
        "kappa_by_views.png": kappa_by_views(metrics),
    }
    return {name: figures[name] for name in FIGURES}


def make_figures(predictions: Predictions, metrics: dict, tables: dict) -> dict[str, bytes]:
    """File name -> PNG bytes for every figure in FIGURES."""
    return {
        name: to_png(figure)
        for name, figure in figure_objects(predictions, metrics, tables).items()
    }
