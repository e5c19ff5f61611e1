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
from eval.figures import FIGURES, MURA_FIGURES

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
    if metrics.get("members"):
        lines += ["", "ensemble members, each alone:", f"{'top1':>8} {'kappa':>8} {'s_kappa':>8} "
                  f"{'s_auroc':>8}  member"]  # fmt: skip
        for member in metrics["members"]:
            cells = [format_rate(member.get(key)) for key in HEADLINE_NAMES]
            name = member.get("model") or member.get("predictions")
            lines.append(" ".join(f"{cell:>8}" for cell in cells) + f"  {name}")
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
        if source.get("tta"):
            rows.append(("tta", "Test-time augmentation", source["tta"]))
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
    if metrics.get("members"):
        names = [member.get("model") or member.get("predictions") for member in metrics["members"]]
        rows.append(("members", "Ensemble of", "; ".join(str(name) for name in names)))
    rows.append(("evaluated", "Evaluated", evaluated_counts(metrics)))
    return rows


# ---- the "MURA metric" section: one table per metrics.json block, shown when present ----------

#: (row label, key) of the study call's rates, in the order the MURA tables list them.
CALL_RATES = (
    ("Cohen's κ", "kappa"),
    ("AUROC", "auroc"),
    ("Accuracy", "accuracy"),
    ("Sensitivity", "sensitivity"),
    ("Specificity", "specificity"),
)
#: How each metric compared by --compare and reported per ensemble member is named.
HEADLINE_NAMES = {
    "top1_accuracy": "Top-1 accuracy (14 classes)",
    "cohen_kappa": "Cohen's κ (14 classes)",
    "study_kappa": "Study Cohen's κ",
    "study_auroc": "Study AUROC",
}
AGGREGATION_NAMES = {"mean": "Mean of the images (MURA's rule)", "max": "Max of the images"}


def format_threshold(value) -> str:
    """A threshold or temperature with 4 decimals (a fitted one falls between two scores)."""
    return "n/a" if value is None else f"{value:.4f}"


def _figure_html(name: str, png: bytes) -> str:
    """One inlined figure with its caption from FIGURES."""
    encoded = base64.b64encode(png).decode("ascii")
    caption = FIGURES[name]
    return (
        f"<figure id='{html.escape(name)}'><img alt='{html.escape(caption)}' "
        f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)} "
        f"(<code>{html.escape(name)}</code>)</figcaption></figure>"
    )


def operating_point_html(metrics: dict) -> list[str]:
    """The operating point, the study call at 0.5 beside it, and what was fitted."""
    point = metrics.get("operating_point")
    at_point = metrics["study_level"].get("at_operating_point")
    parts = []
    if point is not None:
        temperature = point.get("temperature")
        parts.append(
            f"<p id='operating-point'>Operating point: threshold "
            f"{format_threshold(point['threshold'])} ({html.escape(str(point['source']))})"
            + (f", temperature {format_threshold(temperature)} "
               f"({html.escape(str(point.get('temperature_source', '')))})"
               if temperature is not None else "")
            + ".</p>"
        )  # fmt: skip
    if at_point is not None:
        threshold = at_point.get("threshold", point["threshold"] if point else None)
        rows = [[name, format_rate(metrics["study_level"].get(key)), format_rate(at_point.get(key))]
                for name, key in CALL_RATES if key in at_point]  # fmt: skip
        parts.append(
            _table(
                ["Study call", "At 0.5", f"At the operating point {format_threshold(threshold)}"],
                rows,
            )  # fmt: skip
        )
    fitted = point.get("fitted") if point else None
    if fitted:
        on = fitted.get("fitted_on", {})
        where = ", ".join(f"{key} {value}" for key, value in on.items())
        parts.append(
            f"<h3>Fitted on this split</h3><p id='fitted'>Temperature "
            f"{format_threshold(fitted.get('temperature'))} (minimum negative log-likelihood), "
            f"then the threshold on the scaled probabilities; fitted on {html.escape(where)}.</p>"
        )
        parts.append(_table(["Threshold fitted by", "Threshold", "Value at the threshold"], [
            ["Maximum study κ", format_threshold(fitted.get("threshold")),
             format_rate(fitted.get("kappa_at_threshold"))],
            ["Youden's J (sensitivity + specificity - 1)",
             format_threshold(fitted.get("youden_threshold")), format_rate(fitted.get("youden_j"))],
        ]))  # fmt: skip
        parts.append(_table(["Fitted", "Before", "After"], [
            ["Study κ (threshold 0.5, then the fitted one)",
             format_rate(fitted.get("kappa_at_default_threshold")),
             format_rate(fitted.get("kappa_at_threshold"))],
            ["Top-1 expected calibration error (temperature 1, then the fitted one)",
             format_rate(fitted.get("ece_before")), format_rate(fitted.get("ece_after"))],
        ]))  # fmt: skip
    return parts


def aggregation_rows(metrics: dict) -> list[list[str]]:
    """One row per aggregation of `study_level.aggregations` (mean, max)."""
    return [[AGGREGATION_NAMES.get(how, how), *(format_rate(values.get(key)) for _, key in CALL_RATES)]
            for how, values in metrics["study_level"]["aggregations"].items()]  # fmt: skip


def by_views_rows(metrics: dict) -> list[list[str]]:
    """One row per group of `study_level.by_views` ("1", "2", "3", "4+")."""
    return [[f"{group} image{'s' if group != '1' else ''}", format_count(values["n_studies"]),
             format_rate(values.get("kappa")), format_rate(values.get("auroc")),
             format_rate(values.get("accuracy"))]
            for group, values in metrics["study_level"]["by_views"].items()]  # fmt: skip


def region_given_rows(metrics: dict) -> tuple[list[list[str]], list[list[str]]]:
    """(overall rows, per-region rows) of `region_given` beside the summed-mass call."""
    given = metrics["region_given"]
    study = metrics["study_level"]
    overall = [
        ["Images", format_rate(given["image_level"].get("kappa")),
         format_rate(given["image_level"].get("auroc")), "n/a"],
        ["Studies", format_rate(given["study_level"].get("kappa")),
         format_rate(given["study_level"].get("auroc")),
         format_rate(given["study_level"].get("accuracy"))],
    ]  # fmt: skip
    per_region = []
    for region, values in given["study_level"].get("per_region", {}).items():
        summed = study.get("per_region", {}).get(region, {})
        per_region.append([region, format_count(values.get("n_studies", summed.get("n_studies"))),
                           format_rate(summed.get("kappa")), format_rate(values.get("kappa")),
                           format_rate(summed.get("auroc")), format_rate(values.get("auroc"))])  # fmt: skip
    return overall, per_region


def comparison_rows(metrics: dict) -> list[list[str]]:
    """One row per metric of `comparison`: this, other, delta, its 95 % interval, verdict."""
    rows = []
    for key, values in metrics["comparison"].items():
        interval = values.get("ci95")
        rows.append([
            HEADLINE_NAMES.get(key, key), format_rate(values.get("this")),
            format_rate(values.get("other")), format_rate(values.get("delta")),
            "n/a" if not interval else f"{format_rate(interval[0])} to {format_rate(interval[1])}",
            "yes" if values.get("significant") else "no",
        ])  # fmt: skip
    return rows


def member_table_rows(metrics: dict) -> list[list[str]]:
    """One row per `members` entry, then the ensemble's own headline numbers."""
    rows = []
    for member in metrics["members"]:
        name = member.get("model") or member.get("predictions") or "?"
        rows.append([name, *(format_rate(member.get(key)) for key in HEADLINE_NAMES)])
    study = metrics["study_level"]
    rows.append(["Ensemble (mean of the members' probabilities)",
                 format_rate(metrics["top1_accuracy"]), format_rate(metrics["cohen_kappa"]),
                 format_rate(study["kappa"]), format_rate(study["auroc"])])  # fmt: skip
    return rows


def mura_section(metrics: dict, figures: dict[str, bytes]) -> list[str]:
    """report.html's "MURA metric" section: the blocks of issue 11 that metrics.json holds
    (operating point, aggregations, views, region-given, comparison, ensemble members) and
    the threshold sweep and kappa-by-views figures. Absent blocks are left out."""
    study = metrics["study_level"]
    parts = ["<h2 id='mura-metric'>MURA metric</h2>",
             "<p>MURA is judged by the study-level Cohen's κ of the abnormality call. Unless "
             "a table says otherwise a study's P(abnormal) is the mean of its images' and the "
             "call is made at 0.5.</p>"]  # fmt: skip
    if "operating_point" in metrics or "at_operating_point" in study:
        parts.append("<h3>Operating point</h3>")
        parts += operating_point_html(metrics)
    if "threshold_sweep.png" in figures:
        parts.append(_figure_html("threshold_sweep.png", figures["threshold_sweep.png"]))
    if "aggregations" in study:
        parts.append("<h3>Study P(abnormal): mean or max of the images</h3>")
        parts.append(_table(["Aggregation", *(name for name, _ in CALL_RATES)],
                            aggregation_rows(metrics)))  # fmt: skip
    if "by_views" in study:
        parts.append("<h3>By number of images in the study</h3>")
        parts.append(_table(["Images in the study", "Studies", "Cohen's κ", "AUROC", "Accuracy"],
                            by_views_rows(metrics)))  # fmt: skip
    if "kappa_by_views.png" in figures:
        parts.append(_figure_html("kappa_by_views.png", figures["kappa_by_views.png"]))
    if "region_given" in metrics:
        overall, per_region = region_given_rows(metrics)
        parts.append(
            "<h3>Region-given abnormality</h3><p>The body part is known from the study's "
            "metadata: P(abnormal | true region) = P(region abnormal) / (P(region normal) + "
            "P(region abnormal)) instead of the summed abnormal mass.</p>"
        )
        parts.append(_table(["Level", "Cohen's κ", "AUROC", "Accuracy"], overall))
        if per_region:
            parts.append(_table(["Region", "Studies", "Cohen's κ, summed mass",
                                 "Cohen's κ, region-given", "AUROC, summed mass",
                                 "AUROC, region-given"], per_region))  # fmt: skip
    if "comparison" in metrics:
        other = metrics.get("compared_with", {})
        parts.append(
            "<h3>Paired comparison</h3><p>This run minus "
            f"<code>{html.escape(str(other.get('path', 'the other run')))}</code> on the same "
            f"images: a paired bootstrap over patients ({format_count(other.get('resamples'))} "
            "resamples); significant only when the 95% interval excludes 0.</p>"
        )
        parts.append(_table(["Metric", "This run", "Other run", "Difference", "95% interval",
                             "Significant"], comparison_rows(metrics)))  # fmt: skip
    if metrics.get("members"):
        parts.append(
            "<h3>Ensemble members</h3><p>Each member evaluated alone (no bootstrap), then the "
            "ensemble: the mean of the members' probabilities.</p>"
        )
        parts.append(_table(["Member", *HEADLINE_NAMES.values()], member_table_rows(metrics)))
    return parts


def gallery_html(gallery) -> list[str]:
    """report.html's gallery (an `eval.gallery.Gallery`): per region, each image the model
    saw beside its Grad-CAM overlay, with the true and predicted class and the confidence."""
    parts = [
        "<h2 id='gallery'>Gallery: most confident mistakes and correct predictions</h2>",
        "<p>Per body region the most confident wrong predictions (14 classes), then the most "
        "confident right one: the model's input image, and beside it the Grad-CAM map of the "
        "predicted class (red: where the evidence for that class lies).</p>",
    ]
    if gallery.note:
        parts.append(f"<p class='note'>{html.escape(gallery.note)}</p>")
    region = None
    for item in gallery.items:
        if item.region != region:
            if region is not None:
                parts.append("</div>")
            region = item.region
            parts.append(f"<h3>{html.escape(region)}</h3>")
            if all(other.correct for other in gallery.items if other.region == region):
                parts.append("<p>No wrong prediction among this region's images.</p>")
            parts.append("<div class='gallery'>")
        verdict = "correct" if item.correct else "mistake"
        images = "".join(
            f"<img class='gallery-{kind}' alt='{kind} of {html.escape(item.image_path)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
            for kind, png in (("image", item.image_png), ("overlay", item.overlay_png))
        )
        parts.append(
            f"<figure class='{verdict}'>{images}<figcaption><b>{verdict}</b>: true "
            f"{html.escape(item.true_class)}, predicted {html.escape(item.predicted_class)} "
            f"(confidence {format_rate(item.confidence)})<br><code>"
            f"{html.escape(item.image_path)}</code></figcaption></figure>"
        )
    if region is not None:
        parts.append("</div>")
    return parts


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
div.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
div.gallery figure { margin: 0; width: 340px; } div.gallery img { width: 160px; margin-right: 4px; }
div.gallery figure.mistake figcaption b { color: #b00; }
div.gallery figure.correct figcaption b { color: #070; }
div.gallery code { font-size: .8em; word-break: break-all; }
"""


def render_report(
    metrics: dict, figures: dict[str, bytes], title: str = "bonify evaluation", gallery=None
) -> str:
    """report.html text: a header saying what was evaluated (metrics["source"]), metric
    tables, the MURA metric section, notes for null metrics, every figure inlined, and the
    gallery (an `eval.gallery.Gallery`) when given."""
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
    parts += mura_section(metrics, figures)
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(name, figures[name]) for name in FIGURES
              if name in figures and name not in MURA_FIGURES]  # fmt: skip
    if gallery is not None:
        parts += gallery_html(gallery)
    parts.append("</body></html>")
    return "\n".join(parts)
