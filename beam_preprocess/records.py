"""The written record: `tf.train.Example` with the keys of bonify.vocabulary.RecordKeys,
and the TFDS metadata that makes `tfds.builder_from_directory(OUT)` work.

Both views of a record agree: the TFDS features below serialize each key to the same
feature type as `bonify.vocabulary.tf_feature_spec()` (Image / Tensor(BYTES) / Text ->
bytes, Scalar / ClassLabel -> int64), so the trainer can read shards with plain
`tf.io.parse_example` and users can read them with TFDS. TensorFlow and TFDS are imported
lazily: the pure modules of this package do not need them.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Mapping

from beam_preprocess.index import ImageEntry
from beam_preprocess.shards import shard_file_name
from beam_preprocess.transform import ProcessedImage
from bonify.vocabulary import (
    CLASS_NAMES,
    DATASET_NAME,
    RECORD_FEATURE_TYPES,
    REGIONS,
    SPLITS,
    RecordKeys,
)

#: TFDS file name template matching bonify.vocabulary.shard_prefix + "-00000-of-00016".
TFDS_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"

#: Files tfds.folder_dataset.write_metadata creates in OUT (removed by --overwrite).
TFDS_METADATA_FILES: tuple[str, ...] = (
    "dataset_info.json",
    "features.json",
    "label.labels.txt",
    "region.labels.txt",
)


def record_values(
    entry: ImageEntry, image: ProcessedImage, encoding: str
) -> dict[str, int | bytes]:
    """Record key -> value (int or bytes) of one written image; all RecordKeys present."""
    return {
        RecordKeys.IMAGE: image.encoded,
        RecordKeys.HEIGHT: image.height,
        RecordKeys.WIDTH: image.width,
        RecordKeys.CHANNELS: 1,
        RecordKeys.FORMAT: encoding.encode(),
        RecordKeys.LABEL: entry.label,
        RecordKeys.REGION: REGIONS.index(entry.region),
        RecordKeys.ABNORMAL: entry.abnormal,
        RecordKeys.PATIENT_ID: entry.patient_id.encode(),
        RecordKeys.STUDY_ID: entry.study_id.encode(),
        RecordKeys.PATH: entry.path.encode(),
        RecordKeys.ORIGINAL_HEIGHT: image.original_height,
        RecordKeys.ORIGINAL_WIDTH: image.original_width,
        RecordKeys.SHA256: image.sha256.encode(),
    }


def _varint(number: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int < 2**64."""
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _length_delimited(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def serialize_record(values: Mapping[str, int | bytes]) -> bytes:
    """Serialize record values (see `record_values`) as a `tf.train.Example`.

    Encoded directly in the protobuf wire format, so that workers need no TensorFlow
    (importing it costs ~3 s and ~0.4 GB per worker process). The bytes equal
    `tf.train.Example(...).SerializeToString(deterministic=True)` (tested): map entries
    sorted by key; Feature.bytes_list = field 1, Feature.int64_list = field 3 (packed).
    """
    entries = []
    for key in sorted(RECORD_FEATURE_TYPES):
        if RECORD_FEATURE_TYPES[key] == "int64":
            number = int(values[key])
            feature = _length_delimited(0x1A, _length_delimited(0x0A, _varint(number % 2**64)))
        else:
            feature = _length_delimited(0x0A, _length_delimited(0x0A, bytes(values[key])))
        entry = _length_delimited(0x0A, key.encode()) + _length_delimited(0x12, feature)
        entries.append(_length_delimited(0x0A, entry))
    return _length_delimited(0x0A, b"".join(entries))


def _masked_crc32c(data: bytes, crc32c) -> int:
    """The TFRecord checksum: crc32c rotated right by 15 plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _FramedWriter:
    """TFRecord writer over Beam FileSystems (local and gs://) with a C crc32c."""

    def __init__(self, path: str, crc32c):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        self._crc32c = crc32c
        self._handle = FileSystems.create(
            path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._handle.write(
            b"".join(
                [
                    length,
                    struct.pack("<I", _masked_crc32c(length, self._crc32c)),
                    record,
                    struct.pack("<I", _masked_crc32c(record, self._crc32c)),
                ]
            )
        )

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def shard_writer_factory(prefer_tensorflow: bool = False):
    """A function path -> TFRecord writer (context manager with .write(bytes)).

    Uses google-crc32c (installed with apache-beam[gcp]) and Beam FileSystems when
    available; otherwise TensorFlow's TFRecordWriter (imports TF). Both write the same bytes.
    """
    if not prefer_tensorflow:
        try:
            import google_crc32c

            if google_crc32c.implementation == "c":
                return lambda path: _FramedWriter(path, google_crc32c.value)
        except ImportError:
            pass
    import tensorflow as tf

    return tf.io.TFRecordWriter


def tfds_features(image_size: int, encoding: str):
    """tfds.features.FeaturesDict whose keys are exactly the record keys."""
    import numpy as np
    import tensorflow_datasets as tfds

    shape = (image_size, image_size, 1)
    if encoding == "raw":
        image = tfds.features.Tensor(
            shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        )
    else:
        image = tfds.features.Image(shape=shape, encoding_format=encoding)
    int64 = tfds.features.Scalar(dtype=np.int64)
    text = tfds.features.Text()
    features = {
        RecordKeys.IMAGE: image,
        RecordKeys.HEIGHT: int64,
        RecordKeys.WIDTH: int64,
        RecordKeys.CHANNELS: int64,
        RecordKeys.FORMAT: text,
        RecordKeys.LABEL: tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        RecordKeys.REGION: tfds.features.ClassLabel(names=list(REGIONS)),
        RecordKeys.ABNORMAL: int64,
        RecordKeys.PATIENT_ID: text,
        RecordKeys.STUDY_ID: text,
        RecordKeys.PATH: text,
        RecordKeys.ORIGINAL_HEIGHT: int64,
        RecordKeys.ORIGINAL_WIDTH: int64,
        RecordKeys.SHA256: text,
    }
    assert set(features) == set(RECORD_FEATURE_TYPES), "TFDS features out of sync with vocabulary"
    return tfds.features.FeaturesDict(features)


def write_tfds_metadata(
    output_dir: str,
    image_size: int,
    encoding: str,
    shard_lengths: Mapping[str, list[int]],
    split_bytes: Mapping[str, int],
) -> list[str]:
    """Write dataset_info.json, features.json and the label files so TFDS reads OUT
    without scanning it. Returns the names of the files written.

    TFDS writes them into a local temporary folder (they hold no absolute path) and Beam
    FileSystems copies them to `output_dir`, so gs:// outputs go through the same client
    as every other file of the job.

    Args:
      shard_lengths: split -> records per shard, in shard order (splits without shards
        are left out of the metadata: TFDS cannot describe an empty split).
      split_bytes: split -> total bytes of its shard files.
    """
    import tempfile

    import tensorflow_datasets as tfds
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="bonify_tfds_") as local_dir:
        # write_metadata lists data_dir to learn the shard naming (check_data=False: it
        # reads no file): empty stand-ins with the real shard names are enough.
        stand_ins = {
            shard_file_name(split, index, len(lengths))
            for split, lengths in shard_lengths.items()
            for index in range(len(lengths))
        }
        for name in stand_ins:
            pathlib.Path(local_dir, name).touch()
        template = tfds.core.ShardedFileTemplate(
            data_dir=local_dir,
            template=TFDS_FILENAME_TEMPLATE,
            dataset_name=DATASET_NAME,
            filetype_suffix="tfrecord",
        )
        split_infos = [
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=list(shard_lengths[split]),
                num_bytes=int(split_bytes.get(split, 0)),
                filename_template=template.replace(split=split),
            )
            for split in SPLITS
            if shard_lengths.get(split)
        ]
        tfds.folder_dataset.write_metadata(
            data_dir=local_dir,
            features=tfds_features(image_size, encoding),
            split_infos=split_infos,
            filename_template=template,
            check_data=False,
            supervised_keys=(RecordKeys.IMAGE, RecordKeys.LABEL),
            description="MURA v1.1 written by bonify's Beam job (beam_preprocess); see manifest.json.",
        )
        names = sorted(set(os.listdir(local_dir)) - stand_ins)
        for name in names:
            with FileSystems.create(FileSystems.join(output_dir, name)) as target:
                target.write(pathlib.Path(local_dir, name).read_bytes())
    return names
