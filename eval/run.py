"""Orchestration: predictions (from a file, in-process inference or Beam) -> metrics ->
files, figures, report, TensorBoard. Everything is computed before anything is written,
so a failing run never leaves a half-replaced output folder."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import pandas as pd

from bonify.vocabulary import CLASS_NAMES, REGIONS
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.metrics import row_normalized
from eval.predictions import Predictions, predictions_csv_text, read_predictions

#: Every file a run writes to the output folder (figures are listed in eval.figures.FIGURES).
TABLE_FILES = (
    "predictions.csv",
    "study_predictions.csv",
    "confusion_matrix.csv",
    "confusion_matrix_normalized.csv",
    "region_confusion.csv",
    "per_class.csv",
    "per_region.csv",
    "metrics.json",
    "report.html",
)


def _csv(table: pd.DataFrame, index: bool = False) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=index)
    return buffer.getvalue()


def output_files(predictions: Predictions, metrics: dict, tables: dict) -> dict[str, str]:
    """File name -> text of every CSV and metrics.json."""
    confusion = pd.DataFrame(tables["confusion"], index=CLASS_NAMES, columns=CLASS_NAMES)
    confusion.index.name = "true_class"
    normalized = pd.DataFrame(
        row_normalized(tables["confusion"]), index=CLASS_NAMES, columns=CLASS_NAMES
    )
    normalized.index.name = "true_class"
    regions = pd.DataFrame(tables["region_confusion"], index=REGIONS, columns=REGIONS)
    regions.index.name = "true_region"
    per_region = pd.DataFrame(
        [
            {"region": region, **metrics["per_region"][region],
             **{f"study_{key}": value
                for key, value in metrics["study_level"]["per_region"][region].items()}}
            for region in REGIONS
        ]
    )  # fmt: skip
    return {
        "predictions.csv": predictions_csv_text(predictions),
        "study_predictions.csv": _csv(tables["studies"]),
        "confusion_matrix.csv": _csv(confusion, index=True),
        "confusion_matrix_normalized.csv": _csv(normalized, index=True),
        "region_confusion.csv": _csv(regions, index=True),
        "per_class.csv": _csv(pd.DataFrame(metrics["per_class"])),
        "per_region.csv": _csv(per_region),
        # allow_nan=False: a NaN anywhere is a bug, not something to write.
        "metrics.json": json.dumps(metrics, indent=2, allow_nan=False) + "\n",
    }


def _check_output_dir(output_dir: str) -> None:
    import tensorflow as tf

    if not output_dir.strip():
        raise EvalError("--output_dir is empty")
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise EvalError(f"--output_dir {output_dir}: exists and is not a folder")


def obtain_members(config: EvalConfig) -> list[Predictions] | None:
    """The predictions of each model (or file) of config.members, per the config's mode,
    sorted by path (None after a Dataflow dry run); EvalError when files of an ensemble are
    not predictions of the same images."""
    from eval.ensemble import check_members

    if config.predictions is not None:
        members = [read_predictions(path).sorted_by_path() for path in config.members]
        check_members(members, config.members, "--predictions")
        return members
    if config.beam_args is not None:
        from eval.beam_inference import predict_split_beam_members

        members = predict_split_beam_members(
            config.members, config.data_dir, config.split, config.batch_size,
            config.output_dir, config.beam_args, config.image_size, config.resize, config.tta,
        )  # fmt: skip
    else:
        from eval.predict import predict_split_members

        members = predict_split_members(
            config.members, config.data_dir, config.split, config.batch_size,
            verbose=config.verbose, image_size=config.image_size, resize=config.resize,
            tta=config.tta,
        )  # fmt: skip
    return None if members is None else [member.sorted_by_path() for member in members]


def evaluate(config: EvalConfig) -> dict:
    """Run the whole evaluation; returns metrics.json's content. Prints the summary table."""
    import tensorflow as tf

    from eval.figures import make_figures
    from eval.metrics import compute_metrics
    from eval.provenance import describe_source
    from eval.report import render_report, summary_text

    _check_output_dir(config.output_dir)
    if config.model is not None:
        from eval.options import model_file

        # JOB or JOB/model -> the .keras file, which the provenance then hashes.
        config = dataclasses.replace(
            config,
            model=model_file(config.model),
            other_members=tuple(model_file(member) for member in config.other_members),
        )
    members = obtain_members(config)
    if members is None:  # a Dataflow --dry_run: the job was built, nothing ran
        print("dry run on DataflowRunner: job built, nothing submitted or evaluated", flush=True)
        return {}
    from eval import operating_point
    from eval.ensemble import average_members

    # Each model's card temperature applies to its own outputs (all modes alike, here).
    point = operating_point.resolve_operating_point(config)
    raw_members = members
    members = [
        operating_point.with_temperature(member, temperature)
        for member, temperature in zip(
            members, operating_point.member_temperatures(point, len(members)), strict=True
        )
    ]
    predictions = average_members(members, f"ensemble of {', '.join(config.members)}")
    metrics, tables = compute_metrics(
        predictions, config.bootstrap_resamples, config.seed, threshold=point["threshold"]
    )
    if config.fit_operating_point:
        # A single model is fitted on its outputs before any temperature; an ensemble on
        # its averaged probabilities.
        point["fitted"] = operating_point.fit(
            raw_members[0] if len(members) == 1 else predictions, config
        )
        if config.update_model_card:
            from bonify.model_card import card_path

            point["model_card_updated"] = card_path(config.model)
    metrics["operating_point"] = point
    if config.compare is not None:
        from eval.compare import compare

        metrics["comparison"], metrics["compared_with"] = compare(
            predictions, config.compare, config.bootstrap_resamples, config.seed
        )
    metrics["source"] = describe_source(
        config.predictions, config.model, config.data_dir, config.split,
        inference="beam" if config.beam_args else "in-process",
    )  # fmt: skip
    if config.model is not None:
        metrics["source"]["tta"] = config.tta
    if len(members) > 1:
        from eval.ensemble import member_rows

        kind = "model" if config.model is not None else "predictions"
        metrics["members"] = member_rows(members, config.members, kind, config.seed)
    figures = make_figures(predictions, metrics, tables)
    files = output_files(predictions, metrics, tables)
    gallery = None
    if config.model is not None:
        from eval.gallery import gallery_for_model

        gallery = gallery_for_model(config.model, config.data_dir, config.split, predictions)
    files["report.html"] = render_report(metrics, figures, gallery=gallery)

    tf.io.gfile.makedirs(config.output_dir)
    for name, text in files.items():
        with tf.io.gfile.GFile(os.path.join(config.output_dir, name), "w") as handle:
            handle.write(text)
    for name, png in figures.items():
        with tf.io.gfile.GFile(os.path.join(config.output_dir, name), "wb") as handle:
            handle.write(png)
    if config.model is not None:
        from eval.tensorboard import write_tensorboard

        write_tensorboard(config.output_dir, metrics, figures)

    if config.update_model_card:
        operating_point.update_model_card(config.model, point["fitted"])

    print(summary_text(metrics))
    print("\n".join(["", *operating_point.summary_lines(metrics)]))
    print(f"\nreport: {os.path.join(config.output_dir, 'report.html')}")
    return metrics
