"""The evaluation figures as PNG bytes (matplotlib, Agg backend: no display needed).

Each function takes metrics/tables from `eval.metrics.compute_metrics` and returns PNG
bytes; `make_figures` returns them all, keyed by file name, in report order.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from bonify.vocabulary import CLASS_NAMES, NUM_CLASSES, REGIONS  # noqa: E402
from eval.metrics import row_normalized  # noqa: E402
from eval.predictions import Predictions  # noqa: E402

#: File name -> caption, in the order the report shows them.
FIGURES: dict[str, str] = {
    "confusion_matrix.png": "Row-normalised 14x14 confusion matrix (rows = true class)",
    "per_class_f1.png": "F1 per class",
    "region_accuracy.png": "14-class accuracy per body region",
    "normal_abnormal_accuracy.png": "Accuracy on normal vs abnormal images per region",
    "confidence_histograms.png": "Top-1 confidence of correct vs wrong predictions",
    "class_counts.png": "True vs predicted class counts",
    "reliability_diagram.png": "Reliability diagram (top-1 confidence)",
    "study_roc.png": "Study-level ROC of the abnormality call per region",
    "confused_pairs.png": "Most confused class pairs",
}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _value(value) -> float:
    return 0.0 if value is None else float(value)


def confusion_heatmap(confusion: np.ndarray) -> bytes:
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
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _png(figure)


def per_class_f1(metrics: dict) -> bytes:
    figure, axes = plt.subplots(figsize=(10, 4.5))
    values = [_value(row["f1"]) for row in metrics["per_class"]]
    colors = ["tab:blue" if i % 2 == 0 else "tab:red" for i in range(NUM_CLASSES)]
    axes.bar(range(NUM_CLASSES), values, color=colors)
    axes.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    axes.axhline(metrics["f1_macro"], color="gray", linestyle="--", label="macro F1")
    axes.legend()
    return _png(figure)


def region_accuracy(metrics: dict) -> bytes:
    figure, axes = plt.subplots(figsize=(8, 4))
    values = [_value(metrics["per_region"][region]["accuracy"]) for region in REGIONS]
    bars = axes.bar(REGIONS, values, color="tab:green")
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("14-class accuracy")
    axes.axhline(metrics["top1_accuracy"], color="gray", linestyle="--", label="overall")
    axes.legend(loc="lower right")
    return _png(figure)


def normal_abnormal_accuracy(metrics: dict) -> bytes:
    figure, axes = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(REGIONS))
    for offset, key, color in ((-0.2, "normal_accuracy", "tab:blue"),
                               (0.2, "abnormal_accuracy", "tab:red")):  # fmt: skip
        values = [_value(metrics["per_region"][region][key]) for region in REGIONS]
        axes.bar(positions + offset, values, width=0.4, color=color, label=key.split("_")[0])
    axes.set_xticks(positions, REGIONS)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("14-class accuracy")
    axes.legend(loc="lower right")
    return _png(figure)


def confidence_histograms(predictions: Predictions) -> bytes:
    correct = predictions.pred_labels == predictions.true_labels
    figure, axes = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, 1, 26)
    axes.hist(predictions.confidences[correct], bins=bins, alpha=0.6, color="tab:green",
              label=f"correct ({int(correct.sum())})")  # fmt: skip
    axes.hist(predictions.confidences[~correct], bins=bins, alpha=0.6, color="tab:red",
              label=f"wrong ({int((~correct).sum())})")  # fmt: skip
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("images")
    axes.legend()
    return _png(figure)


def class_counts(predictions: Predictions) -> bytes:
    true = np.bincount(predictions.true_labels, minlength=NUM_CLASSES)
    predicted = np.bincount(predictions.pred_labels, minlength=NUM_CLASSES)
    figure, axes = plt.subplots(figsize=(10, 4.5))
    positions = np.arange(NUM_CLASSES)
    axes.bar(positions - 0.2, true, width=0.4, label="true")
    axes.bar(positions + 0.2, predicted, width=0.4, label="predicted")
    axes.set_xticks(positions, CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("images")
    axes.legend()
    return _png(figure)


def reliability_diagram(metrics: dict) -> bytes:
    bins = metrics["calibration"]["bins"]
    figure, axes = plt.subplots(figsize=(5.5, 5))
    filled = [row for row in bins if row["count"]]
    centers = [(row["lower"] + row["upper"]) / 2 for row in filled]
    width = bins[0]["upper"] - bins[0]["lower"]
    axes.bar(centers, [row["accuracy"] for row in filled], width=width * 0.9, alpha=0.7,
             label="accuracy", edgecolor="black")  # fmt: skip
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    axes.plot(centers, [row["confidence"] for row in filled], "o", color="tab:red",
              label="mean confidence")  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"ECE = {metrics['calibration']['ece']:.4f}")
    axes.legend(loc="lower right")
    return _png(figure)


def study_roc(metrics: dict, studies) -> bytes:
    figure, axes = plt.subplots(figsize=(6, 5.5))
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
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="lower right")
    else:
        axes.set_title("no group has both normal and abnormal studies")
    return _png(figure)


def confused_pairs(metrics: dict) -> bytes:
    pairs = metrics["most_confused_pairs"]
    figure, axes = plt.subplots(figsize=(8, 0.4 * max(len(pairs), 3) + 1))
    labels = [f"{pair['true_class']} -> {pair['pred_class']}" for pair in pairs]
    axes.barh(range(len(pairs)), [pair["count"] for pair in pairs], color="tab:orange")
    axes.set_yticks(range(len(pairs)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("images (true -> predicted)")
    if not pairs:
        axes.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=axes.transAxes)
    return _png(figure)


def make_figures(predictions: Predictions, metrics: dict, tables: dict) -> dict[str, bytes]:
    """File name -> PNG bytes for every figure in FIGURES."""
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
    }
    return {name: figures[name] for name in FIGURES}
