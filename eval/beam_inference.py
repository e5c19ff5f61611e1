"""Beam mode: the same inference as `eval.predict`, as a RunInference pipeline.

ReadFromTFRecord(split shards) -> decode to uint8 [S, S, 1] -> RunInference with a small
Keras 3 model handler (Beam's TensorFlow handler needs tensorflow_hub and tf_keras) ->
JSON lines in a scratch folder under the output folder -> Predictions (then the scratch
folder is deleted). Several models (an ensemble) run in the same pipeline, each image decoded
once; each model's probabilities are kept apart (averaged later, `eval.ensemble`), each
averaged over the test-time augmentation views (`bonify.tta`). With --runner=DataflowRunner the same job scales out; the workers
need this package (--setup_file ./setup.py) and gs:// paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult

from eval.errors import EvalError
from eval.predictions import Predictions, make_predictions

#: Scratch folder (inside --output_dir) for the pipeline's JSON-lines output.
SCRATCH_DIR = ".beam_inference"


class LoadedModels(list):
    """The loaded models of a handler: a list Beam's shared-model cache can weakly reference
    (a plain list cannot be)."""


class KerasModelHandler(ModelHandler):
    """Loads `.keras` models with keras.saving.load_model; batches of uint8 [S, S, 1] numpy
    images -> PredictionResult(inference=float32 [M, 14]): each of the M models' probabilities
    (averaged over the TTA views, bonify.tta)."""

    def __init__(self, model_paths: Sequence[str], max_batch_size: int = 64, tta: str = "none"):
        super().__init__()
        self._model_paths = list(model_paths)
        self._max_batch_size = max_batch_size
        self._tta = tta

    def load_model(self):
        import keras

        return LoadedModels(keras.saving.load_model(path) for path in self._model_paths)

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None):
        from bonify.tta import predict_on_batch

        images = np.stack(batch)
        probs = np.stack([predict_on_batch(member, images, self._tta) for member in model], axis=1)
        # [B, M, 14]. The example is not echoed back: images would only cost memory downstream.
        return [PredictionResult(None, row.astype(np.float32)) for row in probs]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self._max_batch_size}


def decode_record(serialized: bytes, encoding: str, image_size: int):
    """A serialized tf.train.Example -> ((path, label, patient_id, study_id), uint8 [S, S, 1])."""
    from bonify.dataset import decode_example
    from bonify.vocabulary import RecordKeys

    record = decode_example(serialized, encoding, image_size)
    key = (
        record[RecordKeys.PATH],
        record[RecordKeys.LABEL],
        record[RecordKeys.PATIENT_ID],
        record[RecordKeys.STUDY_ID],
    )
    return key, record[RecordKeys.IMAGE]


def to_json_line(keyed_result) -> str:
    """(key, PredictionResult) -> one JSON object per image ("probs": one list per model)."""
    (path, label, patient_id, study_id), result = keyed_result
    return json.dumps({"path": path, "label": label, "patient_id": patient_id,
                       "study_id": study_id, "probs": np.asarray(result.inference).tolist()})  # fmt: skip


def build_pipeline(pipeline, files: Iterable[str], model_paths: Sequence[str], encoding: str,
                   image_size: int, batch_size: int, output_prefix: str, tta: str = "none"):  # fmt: skip
    """Add the inference steps to `pipeline`; results go to `output_prefix`-*.jsonl."""
    handler = KeyedModelHandler(KerasModelHandler(model_paths, batch_size, tta))
    return (
        pipeline
        | "ShardPaths" >> beam.Create(sorted(files))
        | "ReadRecords" >> beam.io.ReadAllFromTFRecord()
        | "Decode" >> beam.Map(decode_record, encoding=encoding, image_size=image_size)
        | "RunInference" >> beam.ml.inference.RunInference(handler)
        | "ToJson" >> beam.Map(to_json_line)
        | "Write" >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl")
    )


def predict_split_beam(model_path: str, data_dir: str, split: str, batch_size: int,
                       output_dir: str, beam_args: Sequence[str], image_size: int | None = None,
                       resize: str | None = None, tta: str = "none") -> Predictions:  # fmt: skip
    """Run the Beam inference pipeline over `split` and return its Predictions (None for a
    Dataflow --dry_run=True: the job is built, nothing runs). The model's card (or, without
    one, image_size and resize) must match the shards, as in `eval.predict.predict_split`."""
    members = predict_split_beam_members([model_path], data_dir, split, batch_size, output_dir,
                                         beam_args, image_size, resize, tta)  # fmt: skip
    return None if members is None else members[0]


def predict_split_beam_members(model_paths: Sequence[str], data_dir: str, split: str,
                               batch_size: int, output_dir: str, beam_args: Sequence[str],
                               image_size: int | None = None, resize: str | None = None,
                               tta: str = "none") -> list[Predictions] | None:  # fmt: skip
    """`predict_split_beam` for several models (an ensemble's members) in one pipeline: one
    Predictions per model, in the order given (None after a Dataflow dry run)."""
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    from bonify.dataflow import is_dry_run
    from bonify.dataset import read_manifest
    from eval.options import check_model_spec, model_file
    from eval.predict import check_model_input, load_model, split_shards

    model_paths = [model_file(path) for path in model_paths]
    for path in model_paths:
        check_model_spec(path, data_dir, image_size, resize)
    options = PipelineOptions(list(beam_args))
    dry_run = is_dry_run(options)  # the Dataflow checks ran with the flags (eval.options)
    manifest = read_manifest(data_dir)
    files = split_shards(data_dir, split, manifest)
    image_size = manifest.image_size
    # Checked here, before any worker starts, so a wrong model is one clear line.
    for path in model_paths:
        check_model_input(load_model(path), image_size, path)
    scratch = os.path.join(output_dir, SCRATCH_DIR)
    if not dry_run and tf.io.gfile.exists(scratch):
        tf.io.gfile.rmtree(scratch)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, files, model_paths, manifest.encoding, image_size,
                       batch_size, os.path.join(scratch, "predictions"), tta)  # fmt: skip
    if dry_run:
        return None
    rows = []
    for path in sorted(tf.io.gfile.glob(os.path.join(scratch, "predictions*.jsonl"))):
        with tf.io.gfile.GFile(path) as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    tf.io.gfile.rmtree(scratch)
    if not rows:
        raise EvalError(f"--split {split}: the shards of {data_dir} hold no records")
    probs = np.asarray([row["probs"] for row in rows], dtype=np.float64)  # [N, M, 14]
    what = f" (tta {tta})" if tta != "none" else ""
    return [
        make_predictions(
            [row["path"] for row in rows],
            [row["label"] for row in rows],
            probs[:, member] / probs[:, member].sum(axis=1, keepdims=True),
            patient_ids=[row["patient_id"] for row in rows],
            study_ids=[row["study_id"] for row in rows],
            source=f"Beam inference of {path} on {split}{what}",
        )
        for member, path in enumerate(model_paths)
    ]
