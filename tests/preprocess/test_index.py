"""CSV parsing and the image/label join: every row shape, every CSV-level rejection."""

from __future__ import annotations

from beam_preprocess.index import (
    KIND_IMAGE,
    KIND_STUDY_ROW,
    REASONS,
    ImageEntry,
    csv_file_names,
    index_mura,
    parse_image_row,
    parse_study_row,
)

TRAIN_STUDY = "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/"
VALID_STUDY = "MURA-v1.1/valid/XR_ELBOW/patient11185/study2_negative/"


def csvs(train_images="", train_labels="", valid_images="", valid_labels="") -> dict[str, str]:
    texts = dict(
        zip(csv_file_names(), (train_images, train_labels, valid_images, valid_labels), strict=True)
    )
    return texts


def reasons(index) -> dict[str, str]:
    return {rejection.path: rejection.reason for rejection in index.rejections}


def test_csv_file_names_are_the_four_mura_csvs():
    assert sorted(csv_file_names()) == sorted(
        [
            "train_image_paths.csv",
            "train_labeled_studies.csv",
            "valid_image_paths.csv",
            "valid_labeled_studies.csv",
        ]
    )


def test_image_row_parses_into_entry():
    entry = parse_image_row(TRAIN_STUDY + "image3.png", "train", "train_image_paths.csv:7")
    assert entry == ImageEntry(
        path=TRAIN_STUDY + "image3.png",
        folder="train",
        region="WRIST",
        patient_id="00001",
        study_id="WRIST/patient00001/study1",
        abnormal=1,
        source="train_image_paths.csv:7",
    )
    assert entry.label == 13
    assert entry.relative_file == "train/XR_WRIST/patient00001/study1_positive/image3.png"


def test_bad_image_rows_get_their_reason():
    cases = {
        TRAIN_STUDY + "image1.png,1": "unparseable_csv_line",  # two columns
        "image1.png": "unparseable_csv_line",  # no folders
        "MURA-v1.1/train/XR_WRIST/patient00001/image1.png": "unparseable_csv_line",  # no study
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_maybe/image1.png": "unparseable_csv_line",
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/sub/image1.png": "unparseable_csv_line",
        "OTHER/train/XR_WRIST/patient00001/study1_positive/image1.png": "unparseable_csv_line",
        "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png": "unknown_region",
        VALID_STUDY + "image1.png": "wrong_folder",  # valid/ path in the train CSV
    }
    for line, reason in cases.items():
        parsed = parse_image_row(line, "train", "x:1")
        assert not isinstance(parsed, ImageEntry), line
        assert parsed[1] == reason, line
        assert reason in REASONS


def test_study_row_shapes():
    assert parse_study_row(TRAIN_STUDY + ",1", "train") == (
        "train/XR_WRIST/patient00001/study1_positive",
        1,
    )
    # Without the trailing slash and with spaces it is still understood.
    assert parse_study_row(TRAIN_STUDY.rstrip("/") + " , 0", "train")[1] == 0
    bad = {
        TRAIN_STUDY: "unparseable_csv_line",  # no label column
        TRAIN_STUDY + ",1,2": "unparseable_csv_line",
        TRAIN_STUDY + ",yes": "unparseable_csv_line",
        "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/,1": "unknown_region",
        VALID_STUDY + ",0": "wrong_folder",
    }
    for line, reason in bad.items():
        key, problem = parse_study_row(line, "train")
        assert key is None and problem[1] == reason, line


def test_labels_join_images_and_blank_lines_are_not_rows():
    index = index_mura(
        csvs(
            train_images=f"{TRAIN_STUDY}image1.png\r\n\n{TRAIN_STUDY}image2.png\n",
            train_labels=f"{TRAIN_STUDY},1\n",
            valid_images=f"{VALID_STUDY}image1.png\n",
            valid_labels=f"{VALID_STUDY},0\n",
        )
    )
    assert index.input_images == 3
    assert index.study_rows == 2
    assert index.rejections == []
    assert [(e.path, e.folder, e.abnormal) for e in index.entries] == [
        (TRAIN_STUDY + "image1.png", "train", 1),
        (TRAIN_STUDY + "image2.png", "train", 1),
        (VALID_STUDY + "image1.png", "valid", 0),
    ]
    assert index.entries[1].source == "train_image_paths.csv:3"


def test_image_without_study_label_is_rejected():
    index = index_mura(csvs(train_images=f"{TRAIN_STUDY}image1.png\n"))
    assert reasons(index) == {TRAIN_STUDY + "image1.png": "no_study_label"}
    assert index.entries == []


def test_label_disagreeing_with_folder_rejects_row_and_its_images():
    index = index_mura(
        csvs(
            train_images=f"{TRAIN_STUDY}image1.png\n{TRAIN_STUDY}image2.png\n",
            train_labels=f"{TRAIN_STUDY},0\n",
        )
    )
    kinds = sorted((r.kind, r.reason) for r in index.rejections)
    assert kinds == [
        (KIND_IMAGE, "label_mismatch"),
        (KIND_IMAGE, "label_mismatch"),
        (KIND_STUDY_ROW, "label_mismatch"),
    ]
    assert index.entries == []


def test_duplicate_rows_are_rejected_once_and_first_kept():
    index = index_mura(
        csvs(
            train_images=f"{TRAIN_STUDY}image1.png\n{TRAIN_STUDY}image1.png\n",
            train_labels=f"{TRAIN_STUDY},1\n{TRAIN_STUDY},1\n",
        )
    )
    assert len(index.entries) == 1
    assert sorted((r.kind, r.reason, r.source) for r in index.rejections) == [
        (KIND_IMAGE, "duplicate_path", "train_image_paths.csv:2"),
        (KIND_STUDY_ROW, "duplicate_path", "train_labeled_studies.csv:2"),
    ]


def test_patient_in_both_folders_keeps_test_images_only():
    train_study = "MURA-v1.1/train/XR_HAND/patient11185/study1_negative/"
    index = index_mura(
        csvs(
            train_images=f"{train_study}image1.png\n",
            train_labels=f"{train_study},0\n",
            valid_images=f"{VALID_STUDY}image1.png\n",
            valid_labels=f"{VALID_STUDY},0\n",
        )
    )
    assert [e.folder for e in index.entries] == ["valid"]
    assert reasons(index) == {train_study + "image1.png": "patient_in_both_folders"}


def test_every_image_row_is_either_an_entry_or_an_image_rejection():
    index = index_mura(
        csvs(
            train_images="\n".join(
                [
                    f"{TRAIN_STUDY}image1.png",
                    "garbage,line",
                    f"{TRAIN_STUDY}image1.png",
                    "x/y/z.png",
                    "",
                ]
            ),
            train_labels=f"{TRAIN_STUDY},1\nbad label row\n",
        )
    )
    image_rejections = [r for r in index.rejections if r.kind == KIND_IMAGE]
    assert index.input_images == 4
    assert len(index.entries) + len(image_rejections) == index.input_images
    assert [r.reason for r in index.rejections if r.kind == KIND_STUDY_ROW] == [
        "unparseable_csv_line"
    ]
