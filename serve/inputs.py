"""The images a `bonify-predict` run reads: PATH arguments -> one `InputImage` per file.

TF-free and free of image decoding: this only walks folders and reads MURA's
`*_image_paths.csv`. A PATH is an image file (read whatever its extension), a folder (walked
recursively; files with an image or DICOM extension, and extension-less DICOM files, are
taken), or a MURA `*_image_paths.csv` (lines relative to the folder that contains
MURA-v1.1/, as in the release).
"""

from __future__ import annotations

import dataclasses
import os

from bonify.cli import BonifyError
from bonify.vocabulary import MURA_ROOT_NAME

#: File extensions taken from a folder (lower case). DICOM files often have none: see below.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

#: A DICOM file (Part 10) has "DICM" after a 128-byte preamble.
_DICOM_MAGIC_OFFSET, _DICOM_MAGIC = 128, b"DICM"

#: The CSV name suffix that marks a MURA image list.
IMAGE_PATHS_CSV_SUFFIX = "_image_paths.csv"


class PredictError(BonifyError):
    """A bad flag, model or input path of `bonify-predict`; the message names it."""


@dataclasses.dataclass(frozen=True)
class InputImage:
    """One image to predict.

    path: the image's name in the predictions file (the MURA-relative path for CSV entries,
    else the path as found from the PATH argument). file: the local file to read.
    relative: where its Grad-CAM overlay goes under --gradcam_dir (a relative path).
    """

    path: str
    file: str
    relative: str


def _looks_like_dicom(file: str) -> bool:
    try:
        with open(file, "rb") as handle:
            handle.seek(_DICOM_MAGIC_OFFSET)
            return handle.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC
    except OSError:
        return False


def _wanted_in_folder(file: str) -> bool:
    name = os.path.basename(file)
    if name.startswith("."):  # hidden files, e.g. macOS ._image1.png
        return False
    extension = os.path.splitext(name)[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return True
    return extension == "" and _looks_like_dicom(file)


def _folder_images(folder: str) -> list[InputImage]:
    # Relative to the folder's parent, so two folders given together keep their names apart.
    parent = os.path.dirname(os.path.normpath(folder))
    images = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        for name in sorted(files):
            file = os.path.join(root, name)
            if _wanted_in_folder(file):
                images.append(
                    InputImage(path=file, file=file, relative=os.path.relpath(file, parent or "."))
                )
    return images


def _csv_images(csv_file: str) -> list[InputImage]:
    # The release's CSVs live in MURA-v1.1/ and name files from the folder that contains it.
    base = os.path.dirname(os.path.dirname(os.path.abspath(csv_file)))
    images = []
    with open(csv_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            relative = line.strip().split(",")[0].strip()
            if not relative:
                continue
            if not relative.startswith(f"{MURA_ROOT_NAME}/"):
                raise PredictError(
                    f"{csv_file}: line {number}: {relative!r} does not start with "
                    f"{MURA_ROOT_NAME}/ (is this a MURA *_image_paths.csv?)"
                )
            images.append(
                InputImage(path=relative, file=os.path.join(base, relative), relative=relative)
            )
    return images


def check_input_paths(paths: list[str]) -> None:
    """PredictError naming the first PATH argument that does not exist."""
    if not paths:
        raise PredictError("no PATH given: name image files, folders or a *_image_paths.csv")
    for path in paths:
        if path.startswith("gs://"):
            raise PredictError(f"{path}: bonify-predict reads local files; copy them first")
        if not os.path.exists(path):
            raise PredictError(f"{path}: no such file or folder")


def collect_images(paths: list[str]) -> list[InputImage]:
    """Every image named by the PATH arguments, in argument order, each file once."""
    check_input_paths(paths)
    images: list[InputImage] = []
    seen: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            found = _folder_images(path)
        elif path.endswith(IMAGE_PATHS_CSV_SUFFIX):
            found = _csv_images(path)
        else:
            found = [InputImage(path=path, file=path, relative=os.path.basename(path))]
        for image in found:
            key = os.path.realpath(image.file)
            if key not in seen:
                seen.add(key)
                images.append(image)
    return images


def overlay_file_name(relative: str) -> str:
    """The Grad-CAM overlay's relative path for an image's relative path (always a .png)."""
    return relative if relative.lower().endswith(".png") else f"{relative}.png"
