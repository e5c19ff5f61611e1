"""The summary table (text) and the one self-contained report.html (figures inlined).

The HTML has no external assets: figures are base64 PNG data URIs, styles are inline,
so the file reads the same offline, attached to an email or copied out of a bucket.
Every table formats its numbers one way: rates with 3 decimals, counts as integers,
95 % intervals as "0.812 (0.790–0.833)".
"""

from __future__ import annotations

import base64
import html

from bonify.vocabulary import REGIONS, SPLITS
from eval.figures import FIGURES

#: Decimals of every rate (accuracy, kappa, F1, AUROC, ECE...) in the report and the summary.
RATE_DECIMALS = 3


def format_rate(value) -> str:
    """A rate in [0, 1] (or kappa) with RATE_DECIMALS decimals; None -> "n/a"."""
    return "n/a" if value is None else f"{value:.{RATE_DECIMALS}f}"


def format_count(value) -> str:
    """A count as an integer with thousands separators; None -> "n/a"."""
    return "n/a" if value is None else f"{int(value):,}"


def format_with_interval(metrics: dict, value, interval_name: str | None, dash: str = "–") -> str:
    """ "0.812 (0.790–0.833)" when metrics' bootstrap has the interval, else "0.812"."""
    text = format_rate(value)
    interval = metrics.get("bootstrap", {}).get(interval_name) if interval_name else None
    if value is None or not interval or interval.get("low") is None:
        return text
    return f"{text} ({format_rate(interval['low'])}{dash}{format_rate(interval['high'])})"


#: (label, metric getter, bootstrap interval name or None) of the summary, in order.
HEADLINE_METRICS = (
    ("Top-1 accuracy (14 classes)", lambda m: m["top1_accuracy"], "top1_accuracy"),
    ("Top-3 accuracy", lambda m: m["top3_accuracy"], None),
    ("Cohen's κ (14 classes)", lambda m: m["cohen_kappa"], "cohen_kappa"),
    ("F1, macro average", lambda m: m["f1_macro"], None),
    ("F1, weighted average", lambda m: m["f1_weighted"], None),
    ("Precision, weighted average", lambda m: m["precision_weighted"], None),
    ("Recall, weighted average", lambda m: m["recall_weighted"], None),
    ("Body region accuracy", lambda m: m["region_accuracy"], None),
    ("Expected calibration error", lambda m: m["calibration"]["ece"], None),
    ("Study Cohen's κ (abnormality)", lambda m: m["study_level"]["kappa"], "study_kappa"),
    ("Study AUROC", lambda m: m["study_level"]["auroc"], None),
    ("Study accuracy", lambda m: m["study_level"]["accuracy"], None),
    ("Study sensitivity", lambda m: m["study_level"]["sensitivity"], None),
    ("Study specificity", lambda m: m["study_level"]["specificity"], None),
)


def headline_rows(metrics: dict, dash: str = "–") -> list[tuple[str, str]]:
    """(metric name, "value (95 % CI)") rows of the summary table."""
    return [(name, format_with_interval(metrics, get(metrics), interval, dash))
            for name, get, interval in HEADLINE_METRICS]  # fmt: skip


def evaluated_counts(metrics: dict) -> str:
    """ "3,197 images in 1,199 studies"."""
    images = format_count(metrics["n_images"])
    studies = format_count(metrics["study_level"]["n_studies"])
    return f"{images} images in {studies} studies"


#: (column header, per_region key, format) of the image-level region table.
REGION_COLUMNS = (
    ("Images", "n", format_count),
    ("Accuracy (14 classes)", "accuracy", format_rate),
    ("Accuracy on normal images", "normal_accuracy", format_rate),
    ("Accuracy on abnormal images", "abnormal_accuracy", format_rate),
    ("Sensitivity", "sensitivity", format_rate),
    ("Specificity", "specificity", format_rate),
    ("AUROC", "auroc", format_rate),
)
#: The same for study_level.per_region.
STUDY_REGION_COLUMNS = (
    ("Studies", "n_studies", format_count),
    ("Cohen's κ", "kappa", format_rate),
    ("AUROC", "auroc", format_rate),
    ("Accuracy", "accuracy", format_rate),
    ("Sensitivity", "sensitivity", format_rate),
    ("Specificity", "specificity", format_rate),
)


def region_rows(metrics: dict, level: str) -> list[list[str]]:
    """One row per region: level "images" (REGION_COLUMNS) or "studies" (STUDY_REGION_COLUMNS)."""
    if level == "images":
        source, columns = metrics["per_region"], REGION_COLUMNS
    else:
        source, columns = metrics["study_level"]["per_region"], STUDY_REGION_COLUMNS
    return [[region] + [fmt(source[region][key]) for _, key, fmt in columns] for region in REGIONS]


def summary_text(metrics: dict) -> str:
    """The plain-text summary printed at the end of a run (ASCII only: pods and logs)."""
    lines = [f"evaluated: {evaluated_counts(metrics)}", "",
             f"{'metric':<34} value (95% CI, bootstrap over patients)"]  # fmt: skip
    lines += [f"{name.replace('κ', 'kappa'):<34} {value}"
              for name, value in headline_rows(metrics, dash="-")]  # fmt: skip
    lines.append("")
    header = ["region", "images", "acc", "normal", "abnorm", "studies", "s_kappa", "s_auroc"]
    lines.append(" ".join(f"{cell:>8}" for cell in header))
    for region in REGIONS:
        image = metrics["per_region"][region]
        study = metrics["study_level"]["per_region"][region]
        cells = [region, format_count(image["n"]), format_rate(image["accuracy"]),
                 format_rate(image["normal_accuracy"]), format_rate(image["abnormal_accuracy"]),
                 format_count(study["n_studies"]), format_rate(study["kappa"]),
                 format_rate(study["auroc"])]  # fmt: skip
        lines.append(" ".join(f"{cell:>8}" for cell in cells))
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(element id, label, text) rows of the report's header, from metrics["source"]."""
    source = metrics.get("source", {})
    created = (source.get("created_utc") or "").replace("T", " ").removesuffix("Z")
    rows = [
        ("created", "Created (UTC)", created or "n/a"),
        ("bonify-version", "bonify version", source.get("bonify_version") or "n/a"),
    ]
    if source.get("predictions"):
        rows += [
            ("predictions", "Predictions file", source["predictions"]),
            ("predictions-sha256", "Predictions file sha256", source.get("predictions_sha256") or "n/a"),
        ]  # fmt: skip
    if source.get("model"):
        rows += [
            ("model", "Model file", source["model"]),
            ("model-sha256", "Model file sha256", source.get("model_sha256") or "n/a"),
            ("split", "Split", f"{source.get('split')} ({source.get('inference')} inference)"),
        ]
    manifest = source.get("manifest")
    if manifest:
        sizes = manifest.get("split_images", {})
        rows += [
            ("manifest", "Data manifest", manifest["path"]),
            ("manifest-sha256", "Data manifest sha256", manifest.get("sha256") or "n/a"),
            ("image-settings", "Images in the shards",
             f"{manifest.get('image_size')} px square, resize {manifest.get('resize')}, "
             f"encoding {manifest.get('encoding')}"),
            ("split-images", "Images per split",
             ", ".join(f"{split} {format_count(sizes.get(split))}" for split in SPLITS)),
        ]  # fmt: skip
    rows.append(("evaluated", "Evaluated", evaluated_counts(metrics)))
    return rows


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
table.provenance th { text-align: left; } table.provenance td { text-align: left; }
table.provenance td { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; } .note { color: #8a5a00; }
"""


def render_report(
    metrics: dict, figures: dict[str, bytes], title: str = "bonify evaluation"
) -> str:
    """report.html text: a header saying what was evaluated (metrics["source"]), metric
    tables, notes for null metrics, every figure inlined."""
    provenance = "".join(
        f"<tr><th scope='row'>{html.escape(label)}</th>"
        f"<td id='{element_id}'>{html.escape(text)}</td></tr>"
        for element_id, label, text in provenance_rows(metrics)
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<table class='provenance'><tbody>{provenance}</tbody></table>",
        "<h2>Summary</h2>",
        _table(
            ["Metric", "Value (95% CI, bootstrap over patients)"],
            [list(row) for row in headline_rows(metrics)],
        ),  # fmt: skip
        "<p>Study level: a study's P(abnormal) is the mean over its images of the sum of the "
        "7 abnormal-class probabilities; abnormal when &ge; 0.5.</p>",
        "<h2>Per body region: images</h2>",
        "<p>Accuracy: 14-class accuracy of the region's images; sensitivity, specificity, "
        "AUROC: of the image abnormality call (P(abnormal) &ge; 0.5).</p>",
        _table(
            ["Region", *(header for header, _, _ in REGION_COLUMNS)], region_rows(metrics, "images")
        ),  # fmt: skip
        "<h2>Per body region: studies</h2>",
        _table(
            ["Region", *(header for header, _, _ in STUDY_REGION_COLUMNS)],
            region_rows(metrics, "studies"),
        ),  # fmt: skip
        "<h2>Per class</h2>",
        _table(
            ["Class", "Precision", "Recall", "F1", "Images (support)"],
            [
                [
                    row["class"],
                    format_rate(row["precision"]),
                    format_rate(row["recall"]),
                    format_rate(row["f1"]),
                    format_count(row["support"]),
                ]
                for row in metrics["per_class"]
            ],
        ),  # fmt: skip
        "<h2>Most confused pairs</h2>",
        _table(
            ["True class", "Predicted class", "Images", "Share of the true class"],
            [
                [
                    pair["true_class"],
                    pair["pred_class"],
                    format_count(pair["count"]),
                    format_rate(pair["fraction_of_true"]),
                ]
                for pair in metrics["most_confused_pairs"]
            ],
        ),  # fmt: skip
    ]
    notes = metrics.get("notes", {})
    parts.append("<h2>Undefined metrics</h2>")
    if notes:
        parts.append("<p>These metrics are <code>null</code> in metrics.json (n/a above):</p><ul>")
        parts += [f"<li class='note'><code>{html.escape(path)}</code>: {html.escape(reason)}</li>"
                  for path, reason in sorted(notes.items())]  # fmt: skip
        parts.append("</ul>")
    else:
        parts.append("<p>None: every metric is defined for this split.</p>")
    parts.append("<h2>Figures</h2>")
    for name, caption in FIGURES.items():
        if name not in figures:
            continue
        encoded = base64.b64encode(figures[name]).decode("ascii")
        parts.append(
            f"<figure id='{html.escape(name)}'><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)} "
            f"(<code>{html.escape(name)}</code>)</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
