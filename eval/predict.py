"""In-process batch inference: a split's shards -> tf.data -> the model -> probabilities.

The input pipeline mirrors the trainer's: uint8 [batch, S, S, 1] images (the model rescales
inside), records read in shard order so the output rows are deterministic. Several models
(an ensemble's members) run in the same compiled function on each batch, each averaged over
the test-time augmentation views (`bonify.tta`); their probabilities are kept apart. The model runs
under the default strategy, or MirroredStrategy when more than one GPU is visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from bonify.dataset import Manifest, parse_and_decode, read_manifest, split_files
from bonify.vocabulary import SPLITS, RecordKeys
from eval.errors import EvalError
from eval.predictions import Predictions, make_predictions

#: Record keys the evaluator reads (the image plus what a predictions row needs).
METADATA_KEYS = (RecordKeys.PATH, RecordKeys.LABEL, RecordKeys.PATIENT_ID, RecordKeys.STUDY_ID)


def split_shards(data_dir: str, split: str, manifest: Manifest) -> list[str]:
    """The sorted shard files of `split`; EvalError for an unknown or empty split."""
    if split not in SPLITS:
        raise EvalError(f"--split {split}: unknown split; choose one of {', '.join(SPLITS)}")
    if manifest.splits[split].images == 0:
        raise EvalError(
            f"--split {split}: the split of {data_dir} has no images; nothing to evaluate"
        )
    return split_files(data_dir, split)


def load_model(model_path: str):
    """Load a Keras 3 model saved by the trainer (`final.keras`); EvalError when it cannot."""
    import keras
    import tensorflow as tf

    if not tf.io.gfile.exists(model_path):
        raise EvalError(f"--model {model_path}: file not found")
    try:
        return keras.saving.load_model(model_path)
    except (ValueError, OSError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EvalError(f"--model {model_path}: cannot load ({first_line})") from None


def check_model_input(model, image_size: int, model_path: str) -> None:
    """EvalError unless the model takes [batch, image_size, image_size, 1] images."""
    shape = tuple(model.input_shape)
    expected = (image_size, image_size, 1)
    if len(shape) != 4 or tuple(shape[1:]) != expected:
        raise EvalError(
            f"--model {model_path}: model input is {list(shape[1:])} but the shards hold "
            f"{list(expected)} images (manifest image_size {image_size}); evaluate it on shards "
            "written with the image size it was trained on"
        )


def make_dataset(files: list[str], encoding: str, image_size: int, batch_size: int):
    """tf.data of (uint8 images [B, S, S, 1], metadata dict of [B] tensors), in shard order."""
    import tensorflow as tf

    def parse(serialized):
        return parse_and_decode(serialized, encoding, image_size, METADATA_KEYS)

    # Parallel reads and maps stay deterministic (the tf.data default), so rows keep shard order.
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_strategy():
    """MirroredStrategy over the GPUs when there are several, else the default strategy."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_predict_function(model, strategy, tta: str = "none"):
    """A compiled batch -> float32 probabilities function under `strategy`.

    model: one Keras model -> [B, 14]; or a list of models (an ensemble) -> [B, M, 14], each
    member's own probabilities (averaged here only over the TTA views, see bonify.tta).
    With several replicas each gets a contiguous slice of the batch and the outputs are
    gathered back in order.
    """
    import tensorflow as tf

    from bonify.tta import mean_over_views

    members = list(model) if isinstance(model, (list, tuple)) else [model]

    def probabilities(images):
        outputs = [
            mean_over_views(lambda view, m=m: tf.cast(m(view, training=False), tf.float32),
                            images, tta)
            for m in members
        ]  # fmt: skip
        return tf.stack(outputs, axis=1) if isinstance(model, (list, tuple)) else outputs[0]

    replicas = strategy.num_replicas_in_sync
    # XLA exactly when Keras' own predict would use it (Keras turns it off on CPU-only hosts).
    jit_compile = all(bool(getattr(m, "jit_compile", False)) for m in members)
    if replicas == 1:
        return tf.function(probabilities, reduce_retracing=True, jit_compile=jit_compile)

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def predict(images):
        size = tf.shape(images)[0]
        per_replica = (size + replicas - 1) // replicas

        def slice_for(context):
            start = tf.minimum(context.replica_id_in_sync_group * per_replica, size)
            return images[start : tf.minimum(start + per_replica, size)]

        sliced = strategy.experimental_distribute_values_from_function(slice_for)
        outputs = strategy.run(probabilities, args=(sliced,))
        return strategy.gather(outputs, axis=0)

    return predict


def iterate_predictions(
    model, files: list[str], encoding: str, image_size: int, batch_size: int, total=None,
    strategy=None, verbose: int = 1, tta: str = "none",
) -> Iterator[tuple[np.ndarray, dict]]:  # fmt: skip
    """Yield (probs float32 [B, 14] for one model, [B, M, 14] for a list of M models,
    metadata dict of numpy [B]) per batch, with a progress bar."""
    import keras

    strategy = strategy or make_strategy()
    predict = make_predict_function(model, strategy, tta)
    progress = keras.utils.Progbar(total, unit_name="image", verbose=verbose) if verbose else None
    seen = 0
    for images, metadata in make_dataset(files, encoding, image_size, batch_size):
        probs = np.asarray(predict(images), dtype=np.float32)
        seen += len(probs)
        if progress is not None:
            progress.update(seen)
        yield probs, {key: value.numpy() for key, value in metadata.items()}


def predict_split(
    model_path: str,
    data_dir: str,
    split: str,
    batch_size: int,
    verbose: int = 1,
    image_size: int | None = None,
    resize: str | None = None,
    tta: str = "none",
) -> Predictions:
    """Run the model over every image of `split` and return validated Predictions (shard order).

    model_path: a .keras file, JOB or JOB/model; its model card (or, without one, image_size
    and resize) must match the shards' image size and resize mode. tta: see bonify.tta.
    """
    (predictions,) = predict_split_members(
        [model_path], data_dir, split, batch_size, verbose, image_size, resize, tta
    )
    return predictions


def predict_split_members(
    model_paths: Sequence[str],
    data_dir: str,
    split: str,
    batch_size: int,
    verbose: int = 1,
    image_size: int | None = None,
    resize: str | None = None,
    tta: str = "none",
) -> list[Predictions]:
    """`predict_split` for several models (an ensemble's members) in one pass over the
    shards: one validated Predictions per model, in the order given, rows in shard order."""
    from eval.options import check_model_spec, model_file

    model_paths = [model_file(path) for path in model_paths]
    for path in model_paths:
        check_model_spec(path, data_dir, image_size, resize)
    manifest = read_manifest(data_dir)
    files = split_shards(data_dir, split, manifest)
    image_size = manifest.image_size
    models = [load_model(path) for path in model_paths]
    for model, path in zip(models, model_paths, strict=True):
        check_model_input(model, image_size, path)
    total = manifest.splits[split].images
    chunks, metadata = [], {key: [] for key in METADATA_KEYS}
    for probs, batch in iterate_predictions(
        models,
        files,
        manifest.encoding,
        image_size,
        batch_size,
        total,
        verbose=verbose,
        tta=tta,
    ):
        chunks.append(probs)
        for key in METADATA_KEYS:
            metadata[key].append(batch[key])
    if not chunks:
        raise EvalError(f"--split {split}: the shards of {data_dir} hold no records")
    text = {key: [value.decode() for value in np.concatenate(metadata[key])]
            for key in (RecordKeys.PATH, RecordKeys.PATIENT_ID, RecordKeys.STUDY_ID)}  # fmt: skip
    probs = np.concatenate(chunks)  # [N, M, 14]
    what = f" (tta {tta})" if tta != "none" else ""
    return [
        make_predictions(
            text[RecordKeys.PATH],
            np.concatenate(metadata[RecordKeys.LABEL]),
            _renormalized(probs[:, member]),
            patient_ids=text[RecordKeys.PATIENT_ID],
            study_ids=text[RecordKeys.STUDY_ID],
            source=f"model {path} on {split}{what}",
        )
        for member, path in enumerate(model_paths)
    ]


def _renormalized(probs: np.ndarray) -> np.ndarray:
    # float16/bfloat16 softmax outputs can be off 1 by more than float32 rounding; the
    # predictions format promises rows summing to 1.
    probs = probs.astype(np.float64)
    return probs / probs.sum(axis=1, keepdims=True)
