"""data_report.html: an offline picture of what the Beam job wrote, beside the shards.

Per split: images, studies and patients, with class and region bar charts; a grid of
sample images per class decoded from the shards (what the model sees); histograms of the
original image sizes and aspect ratios; the number of images ("views") per study; the
rejects by reason. Everything is embedded (base64 PNGs, inline CSS): the file opens
without a network.

The counts come from manifest.json. The original sizes and views per study are gathered
by the pipeline while it writes the shards (manifest `splits.<split>.original_*_counts`,
`views_per_study`): the records carry each image's original size too, but reading them
back would decode every image of the dataset a second time (minutes for MURA, and a full
download on gs://). Only the sample grid reads shards, a few records per class.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Mapping, Sequence

from bonify import files
from bonify.dataset import Manifest, iterate_records, read_manifest, split_files
from bonify.vocabulary import CLASS_NAMES, REGIONS, SPLITS, RecordKeys

#: The report's file name in the job's --output_dir.
DATA_REPORT_FILE = "data_report.html"

#: Sample images shown per class.
SAMPLES_PER_CLASS = 6

SPLIT_COLOURS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}


# --- what the report shows (plain data) ------------------------------------------------


def collect_samples(
    output_dir: str, manifest: Manifest, per_class: int = SAMPLES_PER_CLASS
) -> dict[str, list[dict]]:
    """Class name -> up to `per_class` decoded records of that class, read from the shards
    (train first, then validation, then test; a split is read only as long as one of the
    classes it holds still lacks samples)."""
    samples: dict[str, list[dict]] = {name: [] for name in CLASS_NAMES}
    for split in SPLITS:
        held = {name for name, count in manifest.splits[split].class_counts.items() if count}

        def missing() -> set[str]:
            return {name for name in held if len(samples[name]) < per_class}  # noqa: B023

        if not missing():
            continue
        for record in iterate_records(split_files(output_dir, split)):
            name = CLASS_NAMES[int(record[RecordKeys.LABEL])]
            if len(samples[name]) < per_class:
                samples[name].append({**record, "split": split})
                if not missing():
                    break
    return {name: records for name, records in samples.items() if records}


# --- charts (matplotlib, rendered to PNG bytes) ------------------------------------------


def _figure_png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _grouped_bars(
    title: str,
    categories: Sequence[str],
    values: Mapping[str, Sequence[int]],
    ylabel: str,
    xlabel: str = "",
) -> bytes:
    """One bar per (category, split), splits side by side; the legend sits above the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rotated = len(categories) > 8  # long class names: slanted labels, narrower slots
    slot_inches = 0.6 if rotated else 1.2
    figure, axes = plt.subplots(figsize=(max(6.0, slot_inches * len(categories) + 2), 4.2))
    width = 0.8 / max(1, len(values))
    for number, (split, counts) in enumerate(values.items()):
        positions = [i + (number - (len(values) - 1) / 2) * width for i in range(len(categories))]
        axes.bar(positions, counts, width, label=split, color=SPLIT_COLOURS.get(split))
    axes.set_xticks(range(len(categories)))
    axes.set_xticklabels(
        categories, rotation=45 if rotated else 0, ha="right" if rotated else "center"
    )
    axes.set_ylabel(ylabel)
    axes.set_xlabel(xlabel)
    axes.set_title(title, pad=28)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(values), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _figure_png(figure)


def _histogram(axes, title: str, counts: Mapping[str, int], bin_width: float, xlabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    starts = [float(key) for key in counts]
    axes.bar(starts, list(counts.values()), width=bin_width, align="edge", color="#4c72b0")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("images")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(axis="y", alpha=0.3)


def _size_histograms(manifest: Manifest) -> bytes:
    """Original height, width and aspect ratio of every written image (all splits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from beam_preprocess.manifest import ASPECT_RATIO_BIN, ORIGINAL_SIZE_BIN_PX

    def total(key: str) -> dict[str, int]:
        summed: dict[str, int] = {}
        for split in SPLITS:
            for value, count in manifest.raw["splits"][split].get(key, {}).items():
                summed[value] = summed.get(value, 0) + count
        return dict(sorted(summed.items(), key=lambda item: float(item[0])))

    figure, (height_axes, width_axes, ratio_axes) = plt.subplots(1, 3, figsize=(14, 3.8))
    _histogram(
        height_axes,
        "original height",
        total("original_height_counts"),
        ORIGINAL_SIZE_BIN_PX,
        f"pixels ({ORIGINAL_SIZE_BIN_PX} px bins)",
    )
    _histogram(
        width_axes,
        "original width",
        total("original_width_counts"),
        ORIGINAL_SIZE_BIN_PX,
        f"pixels ({ORIGINAL_SIZE_BIN_PX} px bins)",
    )
    _histogram(
        ratio_axes,
        "aspect ratio (width / height)",
        total("aspect_ratio_counts"),
        ASPECT_RATIO_BIN,
        f"width / height ({ASPECT_RATIO_BIN:g} bins)",
    )
    figure.tight_layout()
    return _figure_png(figure)


def _image_png(pixels) -> bytes:
    """uint8 [H, W, 1] numpy -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


# --- HTML ---------------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _chart(png: bytes, alt: str) -> str:
    return f'<img class="chart" alt="{html.escape(alt)}" src="{_data_uri(png)}">'


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img.chart { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.samples td { vertical-align: top; }
figure { display: inline-block; margin: 0 0.4em 0.4em 0; text-align: center; }
figure img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #999; }
figcaption { font-size: 0.7em; color: #555; }
.meta { color: #555; }
"""


def render_report(manifest: Manifest, samples: Mapping[str, list[dict]]) -> str:
    """The whole HTML page (a str) for a manifest and the collected samples."""
    raw = manifest.raw
    splits = {split: raw["splits"][split] for split in SPLITS}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>bonify data report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>bonify data report</h1>",
        '<p class="meta">'
        + "<br>".join(
            html.escape(f"{label}: {value}")
            for label, value in (
                ("Data", raw.get("output_dir", "")),
                ("Source", raw.get("input_dir", "")),
                (
                    "Images stored as",
                    f"{manifest.image_size} x {manifest.image_size} px, 1 channel, "
                    f"{manifest.encoding}, resize {manifest.resize}",
                ),
                ("Preprocessed", raw.get("created_utc", "")),
                ("bonify version", raw.get("bonify_version", "")),
                ("Report created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
        )
        + "</p>",
        "<h2>Splits</h2>",
        '<table class="splits"><tr><th>Split</th><th>Images</th><th>Studies</th>'
        "<th>Patients</th><th>Shards</th></tr>",
    ]
    for split, entry in splits.items():
        parts.append(
            f'<tr data-split="{split}"><th>{split}</th>'
            + "".join(
                f'<td class="number" data-key="{key}">{entry[key]:,}</td>'
                for key in ("images", "studies", "patients", "num_shards")
            )
            + "</tr>"
        )
    parts.append(
        f"</table><p>Patients in more than one split: {raw.get('patients_in_multiple_splits', 0)}. "
        "Validation patients come from MURA's train/ folder, test patients are MURA's valid/ folder.</p>"
    )

    parts.append("<h2>Classes and regions</h2>")
    parts.append(
        _chart(
            _grouped_bars(
                "images per class",
                CLASS_NAMES,
                {s: [e["class_counts"][n] for n in CLASS_NAMES] for s, e in splits.items()},
                "images",
            ),
            "images per class and split",
        )
    )
    parts.append(
        _chart(
            _grouped_bars(
                "images per body region",
                REGIONS,
                {s: [e["region_counts"][r] for r in REGIONS] for s, e in splits.items()},
                "images",
            ),
            "images per region and split",
        )
    )

    parts.append("<h2>What the model sees: samples per class, decoded from the shards</h2>")
    parts.append('<table class="samples">')
    for name in CLASS_NAMES:
        records = samples.get(name, [])
        figures = "".join(
            f'<figure><img class="sample" data-class="{name}" data-split="{r["split"]}" '
            f'alt="{name}" title="{html.escape(str(r[RecordKeys.PATH]))}" '
            f'src="{_data_uri(_image_png(r[RecordKeys.IMAGE]))}">'
            f"<figcaption>{r['split']}, {r[RecordKeys.ORIGINAL_HEIGHT]}x{r[RecordKeys.ORIGINAL_WIDTH]}"
            "</figcaption></figure>"
            for r in records
        )
        parts.append(f"<tr><th>{name}</th><td>{figures or 'no image in the shards'}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Original image sizes</h2>")
    parts.append(
        "<p>Before resizing, all splits. Captions above give each sample's original "
        "height x width.</p>"
    )
    parts.append(_chart(_size_histograms(manifest), "original sizes and aspect ratios"))

    parts.append("<h2>Views per study</h2>")
    views = sorted(
        {int(k) for entry in splits.values() for k in entry.get("views_per_study", {})}
    ) or [1]
    parts.append(
        _chart(
            _grouped_bars(
                "studies by number of images",
                [str(v) for v in views],
                {
                    s: [e.get("views_per_study", {}).get(str(v), 0) for v in views]
                    for s, e in splits.items()
                },
                "studies",
                "images in the study",
            ),
            "studies by number of images",
        )
    )

    parts.append("<h2>Rejects</h2>")
    rejects = [
        ("image", reason, count) for reason, count in raw.get("rejected_by_reason", {}).items()
    ]
    rejects += [
        ("label row", reason, count)
        for reason, count in raw.get("rejected_study_rows_by_reason", {}).items()
    ]
    if rejects:
        parts.append(
            f"<p>{raw.get('rejected', 0)} of {raw.get('input_images', 0)} images rejected; "
            "every rejection (path, reason, detail) is listed in rejected.jsonl beside this file.</p>"
            '<table class="rejects"><tr><th>Kind</th><th>Reason</th><th>Count</th></tr>'
        )
        for kind, reason, count in rejects:
            parts.append(
                f'<tr data-kind="{kind}" data-reason="{html.escape(reason)}"><td>{kind}</td>'
                f'<td>{html.escape(reason)}</td><td class="number">{count:,}</td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append(f"<p>None: all {raw.get('input_images', 0)} listed images were written.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_data_report(output_dir: str, manifest: Manifest | None = None) -> str:
    """The data_report.html page of OUTPUT_DIR (its manifest, read when not given, and a
    few records per class of its shards)."""
    manifest = manifest or read_manifest(output_dir)
    has_images = any(manifest.splits[split].images for split in SPLITS)
    samples = collect_samples(output_dir, manifest) if has_images else {}
    return render_report(manifest, samples)


def write_data_report(output_dir: str) -> str:
    """Write OUTPUT_DIR/data_report.html from its manifest and shards; returns its path."""
    page = build_data_report(output_dir)
    path = f"{output_dir.rstrip('/')}/{DATA_REPORT_FILE}"
    files.write_text_atomically(path, page)
    return path
