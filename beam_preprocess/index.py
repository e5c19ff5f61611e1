"""Index a MURA v1.1 tree from its four CSVs: image rows joined with study labels.

Pure functions over the CSV texts: no file system, no Beam. The CSVs are the source of
truth. Every image row becomes either an `ImageEntry` (to be decoded and written) or a
`Rejection` with a short, stable reason code; nothing raises on bad data. Label rows
(`*_labeled_studies.csv`) that are bad are rejections too, of kind `study_row`; the images
of a study whose label is unusable are then rejected as well, with a reason saying why.

What counts as an input image: every non-blank line of `train_image_paths.csv` and
`valid_image_paths.csv`. Blank lines (e.g. a trailing newline) are not rows.
`input_images == written + rejected image rows` always holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from bonify.images import IMAGE_REJECTION_REASONS
from bonify.vocabulary import (
    IMAGE_PATHS_CSV,
    LABELED_STUDIES_CSV,
    MURA_FOLDERS,
    MURA_ROOT_NAME,
    REGIONS,
    label_of,
    parse_study_path,
)

#: Reason codes of rejected inputs, with what they mean. Stable: documented in
#: docs/PREPROCESS.md and counted in manifest.json.
REASONS: dict[str, str] = {
    # CSV level (index.py)
    "unparseable_csv_line": "the CSV line does not have the MURA shape (columns, path pattern, 0/1 label)",
    "unknown_region": "the path names an XR_<REGION> folder that is not one of the 7 MURA regions",
    "wrong_folder": "the path is under a MURA folder other than the CSV's (e.g. valid/ in train_*.csv)",
    "duplicate_path": "the same image (or study label row) is listed again; the first row is used",
    "no_study_label": "no usable row in *_labeled_studies.csv for the image's study",
    "label_mismatch": "the study's CSV label disagrees with its folder suffix (_positive/_negative)",
    "patient_in_both_folders": "the patient also has images in MURA valid/ (the test set); "
    "its train/ images are rejected so that no patient is in two splits",
    # file level (transform.py, pipeline.py)
    "missing_file": "the CSV lists a file that does not exist",
    "unreadable_file": "the file exists but could not be read",
    # image level (bonify.images, shared with bonify-predict)
    **IMAGE_REJECTION_REASONS,
}

#: Kinds of rejection: an image row (counted in `rejected`) or a label row of a study.
KIND_IMAGE = "image"
KIND_STUDY_ROW = "study_row"

# <root>/<folder>/XR_<REGION>/patient<ID>/study<N>_<suffix>/<file>; the study part is
# parsed by bonify.vocabulary.parse_study_path.
_IMAGE_PATH = re.compile(
    r"^(?P<root>[^/]+)/(?P<folder>[^/]+)/(?P<study>[^/]+/[^/]+/[^/]+)/(?P<file>[^/]+)$"
)
_STUDY_PATH = re.compile(r"^(?P<root>[^/]+)/(?P<folder>[^/]+)/(?P<study>[^/]+/[^/]+/[^/]+)$")
_REGION_FOLDER = re.compile(r"XR_(?P<region>[^/]+)/")


class ImageEntry(NamedTuple):
    """One image to decode and write. `split` and `shard_index` are set by split/shards."""

    path: str  # relative MURA path as in the CSV, e.g. "MURA-v1.1/train/XR_WRIST/.../image1.png"
    folder: str  # MURA folder: "train" or "valid"
    region: str  # e.g. "WRIST"
    patient_id: str  # e.g. "00001"
    study_id: str  # bonify.vocabulary.StudyKey.study_id, e.g. "WRIST/patient00001/study1"
    abnormal: int  # 0 or 1, from the study's label row
    source: str  # "<csv file>:<line number>", 1-based
    split: str = ""  # "train" | "validation" | "test" once assigned
    shard_index: int = -1  # index of the shard of its split, once assigned

    @property
    def label(self) -> int:
        """The 14-class label: 2 * region index + abnormal."""
        return label_of(REGIONS.index(self.region), self.abnormal)

    @property
    def relative_file(self) -> str:
        """Path of the file below the MURA-v1.1/ folder, e.g. "train/XR_WRIST/.../image1.png"."""
        return self.path.split("/", 1)[1]


class Rejection(NamedTuple):
    """One rejected input row; one line of rejected.jsonl."""

    path: str  # relative MURA path (or the raw CSV line when it does not parse)
    reason: str  # a key of REASONS
    detail: str  # human-readable specifics
    kind: str = KIND_IMAGE  # KIND_IMAGE or KIND_STUDY_ROW
    source: str = ""  # "<csv file>:<line number>"

    def to_json_dict(self) -> dict:
        """The rejected.jsonl object."""
        return dict(self._asdict())


class MuraIndex(NamedTuple):
    """The result of indexing: entries to process, rejections, and row counts."""

    entries: list[ImageEntry]
    rejections: list[Rejection]
    input_images: int  # non-blank image rows of both *_image_paths.csv
    study_rows: int  # non-blank rows of both *_labeled_studies.csv


def csv_file_names() -> list[str]:
    """The four CSV file names of a MURA v1.1 release, in a fixed order."""
    return [
        template.format(folder=folder)
        for folder in MURA_FOLDERS
        for template in (IMAGE_PATHS_CSV, LABELED_STUDIES_CSV)
    ]


def _numbered_rows(text: str) -> Iterable[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip().lstrip("\ufeff")  # tolerate a BOM and CRLF line ends
        if stripped:
            yield number, stripped


def _study_problem(study_part: str) -> tuple[str, str]:
    """Reason and detail for a study part that bonify.vocabulary cannot parse."""
    match = _REGION_FOLDER.search(study_part + "/")
    if match and match["region"] not in REGIONS:
        return "unknown_region", f"XR_{match['region']} is not one of {', '.join(REGIONS)}"
    return (
        "unparseable_csv_line",
        "expected XR_<REGION>/patient<ID>/study<N>_<positive|negative>",
    )


def parse_study_row(line: str, folder: str) -> tuple[str, int] | tuple[None, tuple[str, str, str]]:
    """Parse a `*_labeled_studies.csv` line such as `MURA-v1.1/train/XR_WRIST/.../study1_positive/,1`.

    Returns (study key, label 0/1) where the study key is "<folder>/XR_.../study1_positive",
    or (None, (path, reason, detail)) for a bad row. The label is *not* yet checked against
    the folder suffix (see `index_mura`).
    """
    fields = line.split(",")
    if len(fields) != 2:
        return None, (line, "unparseable_csv_line", f"expected 2 columns, got {len(fields)}")
    raw_path, raw_label = fields[0].strip(), fields[1].strip()
    if raw_label not in ("0", "1"):
        return None, (raw_path, "unparseable_csv_line", f"label {raw_label!r} is not 0 or 1")
    match = _STUDY_PATH.match(raw_path.rstrip("/"))
    if match is None:
        return None, (
            raw_path,
            "unparseable_csv_line",
            f"expected {MURA_ROOT_NAME}/{folder}/XR_<REGION>/patient<ID>/study<N>_<suffix>/",
        )
    if match["root"] != MURA_ROOT_NAME:
        return None, (
            raw_path,
            "unparseable_csv_line",
            f"path does not start with {MURA_ROOT_NAME}/",
        )
    if match["folder"] != folder:
        return None, (
            raw_path,
            "wrong_folder",
            f"listed in {folder} CSV but under {match['folder']}/",
        )
    try:
        parse_study_path(match["study"] + "/")
    except ValueError:
        reason, detail = _study_problem(match["study"])
        return None, (raw_path, reason, detail)
    return f"{folder}/{match['study']}", int(raw_label)


def parse_image_row(line: str, folder: str, source: str) -> ImageEntry | tuple[str, str, str]:
    """Parse an `*_image_paths.csv` line such as `MURA-v1.1/valid/XR_WRIST/.../image1.png`.

    Returns an ImageEntry with `abnormal` taken from the folder suffix (the caller replaces
    it with the study's CSV label) or (path, reason, detail) for a bad row.
    """
    if "," in line:
        return line, "unparseable_csv_line", "image rows have 1 column, this one has a comma"
    match = _IMAGE_PATH.match(line)
    if match is None:
        return (
            line,
            "unparseable_csv_line",
            f"expected {MURA_ROOT_NAME}/{folder}/XR_<REGION>/patient<ID>/study<N>_<suffix>/<file>",
        )
    if match["root"] != MURA_ROOT_NAME:
        return line, "unparseable_csv_line", f"path does not start with {MURA_ROOT_NAME}/"
    if match["folder"] != folder:
        return line, "wrong_folder", f"listed in {folder} CSV but under {match['folder']}/"
    try:
        key = parse_study_path(match["study"] + "/")
    except ValueError:
        reason, detail = _study_problem(match["study"])
        return line, reason, detail
    return ImageEntry(
        path=line,
        folder=folder,
        region=key.region,
        patient_id=key.patient_id,
        study_id=key.study_id,
        abnormal=key.abnormal_from_folder,
        source=source,
    )


def _study_key_of(entry: ImageEntry) -> str:
    """The study key of an image entry: "<folder>/XR_.../study<N>_<suffix>"."""
    return entry.relative_file.rsplit("/", 1)[0]


def index_mura(csv_texts: Mapping[str, str]) -> MuraIndex:
    """Join the image rows of the four MURA CSVs with their study labels.

    Args:
      csv_texts: CSV file name (see `csv_file_names()`) -> the file's text.

    Returns:
      MuraIndex with one entry per accepted image row (in CSV order, `split` unset) and one
      rejection per rejected image row or label row.
    """
    rejections: list[Rejection] = []
    # Study key -> label 0/1, or None when the study's label is unusable (mismatch).
    study_labels: dict[str, int | None] = {}
    mismatch_detail: dict[str, str] = {}
    study_rows = 0
    for folder in MURA_FOLDERS:
        csv_name = LABELED_STUDIES_CSV.format(folder=folder)
        for number, line in _numbered_rows(csv_texts[csv_name]):
            study_rows += 1
            source = f"{csv_name}:{number}"
            study_key, parsed = parse_study_row(line, folder)
            if study_key is None:
                path, reason, detail = parsed
                rejections.append(Rejection(path, reason, detail, KIND_STUDY_ROW, source))
                continue
            label = parsed
            path = line.split(",")[0].strip()
            suffix_label = parse_study_path(study_key + "/").abnormal_from_folder
            if label != suffix_label:
                detail = f"{source} says {label} but the folder suffix means {suffix_label}"
                rejections.append(Rejection(path, "label_mismatch", detail, KIND_STUDY_ROW, source))
                study_labels[study_key] = None
                mismatch_detail[study_key] = detail
            elif study_key in study_labels:
                rejections.append(
                    Rejection(path, "duplicate_path", "study listed again", KIND_STUDY_ROW, source)
                )
            else:
                study_labels[study_key] = label

    candidates: list[ImageEntry] = []
    seen_paths: dict[str, str] = {}
    input_images = 0
    for folder in MURA_FOLDERS:
        csv_name = IMAGE_PATHS_CSV.format(folder=folder)
        for number, line in _numbered_rows(csv_texts[csv_name]):
            input_images += 1
            source = f"{csv_name}:{number}"
            parsed = parse_image_row(line, folder, source)
            if not isinstance(parsed, ImageEntry):
                rejections.append(Rejection(*parsed, KIND_IMAGE, source))
                continue
            if parsed.path in seen_paths:
                detail = f"first listed at {seen_paths[parsed.path]}"
                rejections.append(
                    Rejection(parsed.path, "duplicate_path", detail, KIND_IMAGE, source)
                )
                continue
            seen_paths[parsed.path] = source
            study_key = _study_key_of(parsed)
            if study_key not in study_labels:
                detail = f"no row for {study_key}/ in {LABELED_STUDIES_CSV.format(folder=folder)}"
                rejections.append(
                    Rejection(parsed.path, "no_study_label", detail, KIND_IMAGE, source)
                )
                continue
            if study_labels[study_key] is None:
                rejections.append(
                    Rejection(
                        parsed.path,
                        "label_mismatch",
                        mismatch_detail[study_key],
                        KIND_IMAGE,
                        source,
                    )
                )
                continue
            candidates.append(parsed._replace(abnormal=study_labels[study_key]))

    # MURA valid/ is the published test set: keep it whole, and drop the train/ images of
    # any patient who also appears there (the real release has none).
    test_patients = {entry.patient_id for entry in candidates if entry.folder == "valid"}
    entries: list[ImageEntry] = []
    for entry in candidates:
        if entry.folder == "train" and entry.patient_id in test_patients:
            detail = f"patient{entry.patient_id} also has images in {MURA_ROOT_NAME}/valid/"
            rejections.append(
                Rejection(entry.path, "patient_in_both_folders", detail, KIND_IMAGE, entry.source)
            )
        else:
            entries.append(entry)
    return MuraIndex(entries, rejections, input_images, study_rows)
