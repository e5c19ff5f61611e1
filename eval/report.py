"""The summary table (text) and the one self-contained report.html (figures inlined).

The HTML has no external assets: figures are base64 PNG data URIs, styles are inline,
so the file reads the same offline, attached to an email or copied out of a bucket.
"""

from __future__ import annotations

import base64
import html

from bonify.vocabulary import REGIONS
from eval.figures import FIGURES


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(metrics: dict, name: str) -> str:
    interval = metrics.get("bootstrap", {}).get(name)
    if not interval or interval.get("low") is None:
        return ""
    return f"[{interval['low']:.4f}, {interval['high']:.4f}]"


def headline_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(metric, value, 95 % CI) rows of the summary table."""
    study = metrics["study_level"]
    return [
        ("images", _fmt(metrics["n_images"]), ""),
        ("top-1 accuracy", _fmt(metrics["top1_accuracy"]), _interval(metrics, "top1_accuracy")),
        ("top-3 accuracy", _fmt(metrics["top3_accuracy"]), ""),
        (
            "Cohen's kappa (14-class)",
            _fmt(metrics["cohen_kappa"]),
            _interval(metrics, "cohen_kappa"),
        ),
        ("F1 macro", _fmt(metrics["f1_macro"]), ""),
        ("F1 weighted", _fmt(metrics["f1_weighted"]), ""),
        ("precision weighted", _fmt(metrics["precision_weighted"]), ""),
        ("recall weighted", _fmt(metrics["recall_weighted"]), ""),
        ("region accuracy", _fmt(metrics["region_accuracy"]), ""),
        ("expected calibration error", _fmt(metrics["calibration"]["ece"]), ""),
        ("studies", _fmt(study["n_studies"]), ""),
        ("study kappa (abnormality)", _fmt(study["kappa"]), _interval(metrics, "study_kappa")),
        ("study AUROC", _fmt(study["auroc"]), ""),
        ("study accuracy", _fmt(study["accuracy"]), ""),
        ("study sensitivity", _fmt(study["sensitivity"]), ""),
        ("study specificity", _fmt(study["specificity"]), ""),
    ]


REGION_COLUMNS = ("n", "accuracy", "normal_accuracy", "abnormal_accuracy", "sensitivity",
                  "specificity", "auroc")  # fmt: skip
STUDY_REGION_COLUMNS = ("n_studies", "kappa", "auroc", "accuracy", "sensitivity", "specificity")


def region_rows(metrics: dict) -> list[list[str]]:
    """Per region: image-level columns then study-level kappa and AUROC."""
    rows = []
    for region in REGIONS:
        image = metrics["per_region"][region]
        study = metrics["study_level"]["per_region"][region]
        rows.append([region] + [_fmt(image[key], 3) for key in REGION_COLUMNS]
                    + [_fmt(study[key], 3) for key in STUDY_REGION_COLUMNS])  # fmt: skip
    return rows


def summary_text(metrics: dict) -> str:
    """The plain-text summary printed at the end of a run."""
    lines = [f"{'metric':<28} {'value':>8}  95% CI (patients)"]
    lines += [f"{name:<28} {value:>8}  {ci}".rstrip() for name, value, ci in headline_rows(metrics)]
    lines.append("")
    header = ["region", "images", "acc", "normal", "abnorm", "study_n", "s_kappa", "s_auroc"]
    lines.append(" ".join(f"{cell:>8}" for cell in header))
    for region in REGIONS:
        image = metrics["per_region"][region]
        study = metrics["study_level"]["per_region"][region]
        cells = [region, _fmt(image["n"]), _fmt(image["accuracy"], 3),
                 _fmt(image["normal_accuracy"], 3), _fmt(image["abnormal_accuracy"], 3),
                 _fmt(study["n_studies"]), _fmt(study["kappa"], 3), _fmt(study["auroc"], 3)]  # fmt: skip
        lines.append(" ".join(f"{cell:>8}" for cell in cells))
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; } .note { color: #8a5a00; }
"""


def render_report(metrics: dict, figures: dict[str, bytes], title: str, source: str) -> str:
    """report.html text: metric tables, notes for null metrics, every figure inlined."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>Source: <code>{html.escape(source)}</code></p>",
        "<h2>Summary</h2>",
        _table(
            ["metric", "value", "95% CI (bootstrap over patients)"],
            [list(row) for row in headline_rows(metrics)],
        ),  # fmt: skip
        "<p>Study level: a study's P(abnormal) is the mean over its images of the sum of the "
        "7 abnormal-class probabilities; abnormal when &ge; 0.5.</p>",
        "<h2>Per body region: images</h2>",
        "<p>accuracy: 14-class accuracy of the region's images; sensitivity, specificity, "
        "auroc: of the image abnormality call (P(abnormal) &ge; 0.5).</p>",
        _table(
            ["region", *REGION_COLUMNS],
            [row[: 1 + len(REGION_COLUMNS)] for row in region_rows(metrics)],
        ),  # fmt: skip
        "<h2>Per body region: studies</h2>",
        _table(
            ["region", *STUDY_REGION_COLUMNS],
            [row[:1] + row[1 + len(REGION_COLUMNS) :] for row in region_rows(metrics)],
        ),  # fmt: skip
        "<h2>Per class</h2>",
        _table(
            ["class", "precision", "recall", "f1", "support"],
            [
                [
                    row["class"],
                    _fmt(row["precision"]),
                    _fmt(row["recall"]),
                    _fmt(row["f1"]),
                    _fmt(row["support"]),
                ]
                for row in metrics["per_class"]
            ],
        ),  # fmt: skip
        "<h2>Most confused pairs</h2>",
        _table(
            ["true class", "predicted class", "images", "fraction of true class"],
            [
                [p["true_class"], p["pred_class"], _fmt(p["count"]), _fmt(p["fraction_of_true"], 3)]
                for p in metrics["most_confused_pairs"]
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
