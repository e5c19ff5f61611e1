"""The vocabulary every bonify stage shares: regions, classes, labels, record schema.

Nothing else in the project re-declares these names or numbers; import them from here.
The module is deliberately free of TensorFlow and Beam imports so that plain-Python
code (CSV parsing, metrics) can use it cheaply; `tf_feature_spec()` imports TF lazily.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# --- MURA v1.1 ------------------------------------------------------------------------

#: The release folder inside the downloaded archive.
MURA_ROOT_NAME = "MURA-v1.1"

#: The seven body regions, alphabetical: a region's index is its position here.
REGIONS: tuple[str, ...] = (
    "ELBOW",
    "FINGER",
    "FOREARM",
    "HAND",
    "HUMERUS",
    "SHOULDER",
    "WRIST",
)
NUM_REGIONS = len(REGIONS)

#: Study status names as they appear in class names, indexed by `abnormal` (0 or 1).
STATUS_NAMES: tuple[str, str] = ("Normal", "Abnormal")

#: Study folder suffixes, indexed by `abnormal` (0 or 1).
STUDY_SUFFIXES: tuple[str, str] = ("negative", "positive")

#: The 14 classes in label order: label = 2 * region_index + abnormal.
CLASS_NAMES: tuple[str, ...] = tuple(
    f"{region}_{status}" for region in REGIONS for status in STATUS_NAMES
)
NUM_CLASSES = len(CLASS_NAMES)

#: MURA's own folders and the CSVs that index them (paths relative to the folder that
#: *contains* MURA-v1.1/, study paths with a trailing slash, no header).
MURA_FOLDERS: tuple[str, str] = ("train", "valid")
IMAGE_PATHS_CSV = "{folder}_image_paths.csv"
LABELED_STUDIES_CSV = "{folder}_labeled_studies.csv"

#: bonify's splits and the MURA folder each one comes from. MURA's `valid/` folder is
#: the test set the literature reports on; bonify carves its validation split out of
#: `train/` by patient.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_SOURCE_FOLDER = {"train": "train", "validation": "train", "test": "valid"}

# A MURA image path: [anything/]XR_<REGION>/patient<ID>/study<N>_<positive|negative>/<file>
_STUDY_PATTERN = re.compile(
    r"XR_(?P<region>[A-Z]+)/patient(?P<patient>\d+)/"
    r"study(?P<study>\d+)_(?P<suffix>positive|negative)/"
)


def label_of(region_index: int, abnormal: int) -> int:
    """The 14-class label of an image: 2 * region_index + abnormal."""
    if not 0 <= region_index < NUM_REGIONS:
        raise ValueError(f"region index {region_index} is not in 0..{NUM_REGIONS - 1}")
    if abnormal not in (0, 1):
        raise ValueError(f"abnormal must be 0 or 1, got {abnormal!r}")
    return 2 * region_index + abnormal


def region_of_label(label: int) -> int:
    """The region index of a 14-class label."""
    return label // 2


def abnormal_of_label(label: int) -> int:
    """1 if the 14-class label is an abnormal class, else 0."""
    return label % 2


class StudyKey(NamedTuple):
    """What a MURA path says about its study."""

    region: str  # e.g. "WRIST"
    patient_id: str  # the digits after "patient", e.g. "11185"
    study_number: int  # N of "study<N>_..."
    abnormal_from_folder: int  # 1 for "_positive", 0 for "_negative"

    @property
    def study_id(self) -> str:
        """A study identifier unique across the dataset: region, patient and number."""
        return f"{self.region}/patient{self.patient_id}/study{self.study_number}"


def parse_study_path(path: str) -> StudyKey:
    """Parse any path containing `XR_<REGION>/patient<ID>/study<N>_<suffix>/`.

    Raises ValueError when the path has no such part or names an unknown region.
    """
    match = _STUDY_PATTERN.search(path.replace("\\", "/"))
    if match is None:
        raise ValueError(
            f"path {path!r} does not contain XR_<REGION>/patient<ID>/study<N>_<positive|negative>/"
        )
    region = match["region"]
    if region not in REGIONS:
        raise ValueError(f"path {path!r} names unknown region XR_{region}")
    return StudyKey(
        region=region,
        patient_id=match["patient"],
        study_number=int(match["study"]),
        abnormal_from_folder=STUDY_SUFFIXES.index(match["suffix"]),
    )


# --- The TFRecord schema written by beam_preprocess and read by trainer and eval ------

#: Bumped whenever a key, dtype or meaning below changes; written to manifest.json.
SCHEMA_VERSION = 1

#: Shard file names follow TFDS: <DATASET_NAME>-<split>.tfrecord-00000-of-00016.
DATASET_NAME = "mura"
SHARD_PREFIX = "{dataset}-{split}.tfrecord"
MANIFEST_FILE = "manifest.json"
REJECTED_FILE = "rejected.jsonl"

#: Image encodings a shard may hold (`format` feature): PNG, JPEG, or raw uint8 bytes.
IMAGE_ENCODINGS: tuple[str, ...] = ("png", "jpeg", "raw")


class RecordKeys:
    """Feature keys of one `tf.train.Example` (one image)."""

    IMAGE = "image"  # bytes: encoded image (see FORMAT), 1 channel
    HEIGHT = "height"  # int64: stored image height in pixels
    WIDTH = "width"  # int64: stored image width in pixels
    CHANNELS = "channels"  # int64: always 1
    FORMAT = "format"  # bytes: one of IMAGE_ENCODINGS
    LABEL = "label"  # int64: 0..13, see CLASS_NAMES
    REGION = "region"  # int64: 0..6, see REGIONS
    ABNORMAL = "abnormal"  # int64: 0 or 1
    PATIENT_ID = "patient_id"  # bytes: e.g. "11185"
    STUDY_ID = "study_id"  # bytes: StudyKey.study_id, e.g. "WRIST/patient11185/study1"
    PATH = "path"  # bytes: relative MURA path, e.g. "MURA-v1.1/valid/XR_WRIST/.../image1.png"
    ORIGINAL_HEIGHT = "original_height"  # int64: source image height
    ORIGINAL_WIDTH = "original_width"  # int64: source image width
    SHA256 = "sha256"  # bytes: hex sha256 of the source file


#: key -> "int64" | "bytes"; every key is a scalar (FixedLen, shape []).
RECORD_FEATURE_TYPES: dict[str, str] = {
    RecordKeys.IMAGE: "bytes",
    RecordKeys.HEIGHT: "int64",
    RecordKeys.WIDTH: "int64",
    RecordKeys.CHANNELS: "int64",
    RecordKeys.FORMAT: "bytes",
    RecordKeys.LABEL: "int64",
    RecordKeys.REGION: "int64",
    RecordKeys.ABNORMAL: "int64",
    RecordKeys.PATIENT_ID: "bytes",
    RecordKeys.STUDY_ID: "bytes",
    RecordKeys.PATH: "bytes",
    RecordKeys.ORIGINAL_HEIGHT: "int64",
    RecordKeys.ORIGINAL_WIDTH: "int64",
    RecordKeys.SHA256: "bytes",
}


def tf_feature_spec(keys: tuple[str, ...] | None = None) -> dict:
    """`tf.io.parse_example` spec for the given keys (all keys when None)."""
    import tensorflow as tf  # lazily: plain-Python users of this module need no TF

    dtypes = {"int64": tf.int64, "bytes": tf.string}
    selected = keys if keys is not None else tuple(RECORD_FEATURE_TYPES)
    unknown = [key for key in selected if key not in RECORD_FEATURE_TYPES]
    if unknown:
        raise KeyError(f"unknown record keys {unknown}; known: {sorted(RECORD_FEATURE_TYPES)}")
    return {key: tf.io.FixedLenFeature([], dtypes[RECORD_FEATURE_TYPES[key]]) for key in selected}


def shard_prefix(split: str) -> str:
    """File name prefix of a split's shards, e.g. "mura-train.tfrecord"."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return SHARD_PREFIX.format(dataset=DATASET_NAME, split=split)


def shard_pattern(split: str) -> str:
    """Glob matching every shard of a split, e.g. "mura-train.tfrecord-*-of-*"."""
    return shard_prefix(split) + "-*-of-*"
