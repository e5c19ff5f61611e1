"""Reading the Beam job's output folder, the contract between the stages: its manifest.json,
the shard files of a split, and one record's parse and image decode. The trainer, the
evaluator (in process and on Beam), `inspect`, the data report and the benchmarks all read
shards through this module, so they see the same pixels.

`read_manifest` and `split_files` import TensorFlow only for URLs (gs://...): on a local
folder a wrong path or a broken manifest is reported at once. The record functions are
TensorFlow ops (usable inside `tf.data` maps), imported lazily.

Errors a user can cause are BonifyError (each stage's CLI turns them into one line and exit
code 2) and name the folder, file or key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator

from bonify import files
from bonify.cli import BonifyError
from bonify.vocabulary import (
    IMAGE_ENCODINGS,
    MANIFEST_FILE,
    RECORD_FEATURE_TYPES,
    SCHEMA_VERSION,
    SPLITS,
    RecordKeys,
    shard_pattern,
    tf_feature_spec,
)

# --- manifest.json and the shard list ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What manifest.json says about one split (`splits.<split>` in docs/PREPROCESS.md)."""

    images: int
    studies: int
    patients: int
    class_counts: dict[str, int]  # class name -> images, all 14 classes
    region_counts: dict[str, int]  # region -> images, all 7 regions
    num_shards: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json of a Beam job's output folder, checked and typed.

    `raw` is the whole JSON object (settings, rejection counts...) for report headers;
    `sha256` is the hash of the file's bytes, so a report can tell two data folders apart.
    """

    path: str  # where it was read from
    image_size: int  # stored images are uint8 [image_size, image_size, 1]
    encoding: str  # one of IMAGE_ENCODINGS
    resize: str  # "pad" or "stretch"
    schema_version: int
    splits: dict[str, SplitInfo]  # every split of SPLITS
    raw: dict
    sha256: str = ""  # of the manifest.json bytes; empty when built from JSON in memory


def read_manifest(data_dir: str) -> Manifest:
    """The checked manifest.json of `data_dir` (local or gs://); BonifyError naming the folder,
    file or key when it is missing or not a manifest this bonify can read."""
    if not files.isdir(data_dir):
        raise BonifyError(
            f"--data_dir {data_dir}: no such directory, so no {MANIFEST_FILE} "
            "(run beam_preprocess first)"
        )
    path = f"{data_dir.rstrip('/')}/{MANIFEST_FILE}"
    if not files.exists(path):
        raise BonifyError(f"--data_dir {data_dir}: no {MANIFEST_FILE} (run beam_preprocess first)")
    content = files.read_bytes(path)
    try:
        raw = json.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise BonifyError(f"{path}: not a valid manifest (not JSON: {error})") from None
    manifest = manifest_from_json(raw, path)
    return dataclasses.replace(manifest, sha256=hashlib.sha256(content).hexdigest())


def manifest_from_json(raw: object, path: str) -> Manifest:
    """A Manifest from the parsed JSON of `path` (named in errors)."""

    def invalid(key: str, problem: str) -> BonifyError:
        return BonifyError(f"{path}: not a valid manifest: key '{key}' {problem}")

    def field(mapping: object, key: str, where: str = ""):
        name = f"{where}.{key}" if where else key
        if not isinstance(mapping, dict):
            raise invalid(where, "is not a JSON object")
        if key not in mapping:
            raise invalid(name, "is missing")
        return mapping[key]

    def integer(mapping: object, key: str, where: str = "") -> int:
        value = field(mapping, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            name = f"{where}.{key}" if where else key
            raise invalid(name, f"must be a non-negative integer, got {value!r}")
        return value

    def counts(mapping: object, key: str, where: str) -> dict[str, int]:
        value = field(mapping, key, where)
        if not isinstance(value, dict):
            raise invalid(f"{where}.{key}", "is not a JSON object")
        return {name: integer(value, name, f"{where}.{key}") for name in value}

    if not isinstance(raw, dict):
        raise BonifyError(f"{path}: not a valid manifest (not a JSON object)")
    schema_version = integer(raw, "schema_version")
    if schema_version != SCHEMA_VERSION:
        raise invalid(
            "schema_version",
            f"is {schema_version} but this bonify reads record schema {SCHEMA_VERSION}: "
            "rerun beam_preprocess with this version",
        )
    image_size = integer(raw, "image_size")
    if image_size == 0:
        raise invalid("image_size", "must be positive, got 0")
    encoding = field(raw, "encoding")
    if encoding not in IMAGE_ENCODINGS:
        raise invalid("encoding", f"must be one of {', '.join(IMAGE_ENCODINGS)}, got {encoding!r}")
    resize = field(raw, "resize")
    if not isinstance(resize, str):
        raise invalid("resize", f"must be a string, got {resize!r}")
    splits_json = field(raw, "splits")
    splits = {}
    for split in SPLITS:
        entry = field(splits_json, split, "splits")
        where = f"splits.{split}"
        splits[split] = SplitInfo(
            images=integer(entry, "images", where),
            studies=integer(entry, "studies", where),
            patients=integer(entry, "patients", where),
            class_counts=counts(entry, "class_counts", where),
            region_counts=counts(entry, "region_counts", where),
            num_shards=integer(entry, "num_shards", where),
        )
    return Manifest(
        path=path,
        image_size=image_size,
        encoding=encoding,
        resize=resize,
        schema_version=schema_version,
        splits=splits,
        raw=raw,
    )


def split_files(data_dir: str, split: str) -> list[str]:
    """The sorted shard files of `split` in `data_dir` (at least one), as
    `<data_dir>/<shard name>` paths."""
    pattern = f"{data_dir.rstrip('/')}/{shard_pattern(split)}"
    shards = sorted(files.glob_names(data_dir.rstrip("/"), shard_pattern(split)))
    if not shards:
        raise BonifyError(f"--data_dir {data_dir}: split {split!r} has no shards ({pattern})")
    return shards


# --- one record: parse and decode -------------------------------------------------------


def parse_record(serialized, keys: Iterable[str] | None = None) -> dict:
    """TF op: a serialized tf.train.Example (scalar string tensor) -> {key: scalar tensor}
    for `keys` (every schema key when None); int64 and string tensors as in the schema."""
    import tensorflow as tf

    spec = tf_feature_spec(tuple(keys) if keys is not None else None)
    return tf.io.parse_single_example(serialized, spec)


def decode_image(encoded, encoding: str, image_size: int):
    """TF op: a record's image bytes -> uint8 [image_size, image_size, 1].

    encoding: "png", "jpeg" or "raw" (the manifest's `encoding`). A record whose image does
    not decode to that shape raises tf.errors.InvalidArgumentError when it runs.
    """
    import tensorflow as tf

    if encoding == "raw":
        image = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [image_size, image_size, 1])
    elif encoding == "jpeg":
        image = tf.io.decode_jpeg(encoded, channels=1)
    elif encoding == "png":
        image = tf.io.decode_png(encoded, channels=1, dtype=tf.uint8)
    else:
        raise ValueError(f"unknown image encoding {encoding!r}; known: {IMAGE_ENCODINGS}")
    return tf.ensure_shape(image, [image_size, image_size, 1])


def parse_and_decode(serialized, encoding: str, image_size: int, keys: Iterable[str] = ()):
    """TF op for tf.data maps: a serialized record -> (uint8 [S, S, 1] image, {key: tensor}
    for the other `keys`)."""
    features = dict(parse_record(serialized, (RecordKeys.IMAGE, *keys)))
    image = decode_image(features.pop(RecordKeys.IMAGE), encoding, image_size)
    return image, features


def decode_example(
    serialized, encoding: str | None = None, image_size: int | None = None
) -> dict[str, object]:
    """One serialized record (bytes or a scalar string tensor), eagerly -> a plain dict:
    every schema key as int or str, the decoded uint8 numpy [S, S, 1] image under "image"
    and the size of its encoded bytes under "image_num_bytes".

    encoding, image_size: as in the manifest; None takes the record's own `format` and
    `height` (records are square). The image goes through `decode_image`, the op the
    trainer uses; the other keys are read with protobuf (about 1000x faster than an eager
    parse op, which matters one record at a time) by the same schema.
    """
    import tensorflow as tf

    if isinstance(serialized, tf.Tensor):
        serialized = serialized.numpy()
    features = tf.train.Example.FromString(serialized).features.feature
    values: dict[str, object] = {}
    for key, kind in RECORD_FEATURE_TYPES.items():
        feature = features[key]
        stored = feature.bytes_list.value if kind == "bytes" else feature.int64_list.value
        if len(stored) != 1:
            raise ValueError(f"record has {len(stored)} values for key {key!r}, expected 1")
        value = stored[0]
        if key != RecordKeys.IMAGE:
            value = value.decode("utf-8") if kind == "bytes" else int(value)
        values[key] = value
    encoded = values[RecordKeys.IMAGE]
    encoding = encoding or str(values[RecordKeys.FORMAT])
    image_size = image_size or int(values[RecordKeys.HEIGHT])  # type: ignore[arg-type]
    values[RecordKeys.IMAGE] = decode_image(encoded, encoding, image_size).numpy()
    values["image_num_bytes"] = len(encoded)  # type: ignore[arg-type]
    return values


def iterate_records(files: Iterable[str], limit: int | None = None) -> Iterator[dict[str, object]]:
    """Yield `decode_example` of each record of `files`, in file order then record order;
    at most `limit` records (all when None). Eager, for inspection and reports, not for
    training (tf.data maps use parse_and_decode)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(list(files))
    if limit is not None:
        dataset = dataset.take(limit)
    for serialized in dataset:
        yield decode_example(serialized)
