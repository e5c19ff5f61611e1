"""Generate a synthetic MURA v1.1 tree: the embedded default data of the demo and tests.

The real MURA release cannot be downloaded on machines without Stanford's agreement, so
bonify ships this generator. It writes `OUTPUT_DIR/MURA-v1.1/` in exactly the release's
layout (the four header-less CSVs with paths relative to OUTPUT_DIR, `train/` and
`valid/` trees of `XR_<REGION>/patient<5 digits>/study<N>_<positive|negative>/image<M>.png`)
so the Beam job reads it through the same code path as the real data.

The images are synthetic radiographs in which the class is visually learnable: each
region has its own bone geometry (two bones at an angle for the elbow, a fan of
metacarpals for the hand, ...), and abnormal studies show a large defect (a displaced
fracture gap, or a bright metal plate with screws) that survives downscaling to 64 px.
Bones are smooth shapes with mild noise, so PNGs compress like X-rays do.

Like the release: patients have 1-3 studies (possibly of different regions), studies have
1-4 images, `valid/` patients are disjoint from `train/` patients, images are 8-bit PNGs
with a long side of 512 px and a varying short side, mostly grayscale with some RGB/RGBA.

Beside MURA-v1.1/ (outside the release's layout) it writes findings.json: for every abnormal
image, the [top, left, bottom, right) box in source pixels where its fracture gap or plate was
drawn, so a model's explanations (Grad-CAM) can be scored against the truth.

Output is deterministic for a given seed: every image is drawn from an RNG seeded by
(seed, patient, study, image), so the bytes do not depend on generation order.
The generator writes to a local folder (plain files; it is a data generator, not a stage
that runs on Dataflow): copy the result to gs:// with `gsutil -m cp -r` if needed.

By default (DEFAULT_PATIENTS = 240 patients, 20% of them in `valid/`) it writes 780 images
in 318 studies, every one of the 14 classes in both folders, in about 15 s on 2 cores.

    bonify-sample --output_dir demo_output/raw            # DEFAULT_PATIENTS patients
    python -m bonify.sample --output_dir /tmp/mura --patients 40 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bonify import vocabulary as vocab
from bonify.cli import BonifyError, OneLineArgumentParser, run_command

#: About 2.45 images per study and 1.3 studies per patient: 780 images (seed 0), 318
#: studies, about 110 MB, written in 12-17 s on 2 shared cores.
DEFAULT_PATIENTS = 240
#: Share of patients placed in MURA's `valid/` folder (the test split).
VALID_PATIENT_FRACTION = 0.2
#: The real release numbers valid patients from 11185 on; train patients from 1.
FIRST_VALID_PATIENT_ID = 11185
IMAGE_LONG_SIDE = 512
#: zlib level 1: PNG encoding dominates generation time; level 1 is ~2.7x faster than
#: Pillow's default 6 for ~13% larger files (still lossless).
PNG_COMPRESS_LEVEL = 1
ABNORMAL_PROBABILITY = 0.45
STUDIES_PER_PATIENT_WEIGHTS = (0.7, 0.22, 0.08)  # 1, 2 or 3 studies
IMAGES_PER_STUDY_WEIGHTS = (0.2, 0.35, 0.3, 0.15)  # 1, 2, 3 or 4 images
#: Image modes as in the release: mostly grayscale, a minority stored as colour.
IMAGE_MODE_WEIGHTS = {"L": 0.8, "RGB": 0.12, "RGBA": 0.08}
#: Written beside MURA-v1.1/: where each abnormal image's finding was drawn, so that a
#: model's explanations (Grad-CAM) can be checked against the truth.
FINDINGS_FILE = "findings.json"


class SampleError(BonifyError):
    """A user error of the sample generator (bad flag, non-empty output folder)."""


@dataclass(frozen=True)
class PlannedStudy:
    """One study to draw: where it goes and what it shows."""

    folder: str  # "train" or "valid"
    region: str
    patient_id: str  # 5 digits
    study_number: int
    abnormal: int
    num_images: int
    defect: str  # "none", "fracture" or "hardware"

    @property
    def relative_dir(self) -> str:
        """The study folder relative to the folder containing MURA-v1.1/, with trailing slash."""
        suffix = vocab.STUDY_SUFFIXES[self.abnormal]
        return (
            f"{vocab.MURA_ROOT_NAME}/{self.folder}/XR_{self.region}/"
            f"patient{self.patient_id}/study{self.study_number}_{suffix}/"
        )


def plan_studies(patients: int, seed: int) -> list[PlannedStudy]:
    """Decide every study of the sample: folder, region, patient, status, image count.

    Patient k's first study has class k mod 14, so every class appears in both folders
    as soon as each folder has 14 patients; further studies are random.
    """
    if patients < 1:
        raise SampleError(f"--patients must be at least 1, got {patients}")
    num_valid = max(1, round(patients * VALID_PATIENT_FRACTION)) if patients > 1 else 0
    num_train = patients - num_valid
    patient_plan = [("train", f"{number:05d}") for number in range(1, num_train + 1)]
    # Valid ids follow the release's numbering, or the train ids if there are that many.
    first_valid = max(FIRST_VALID_PATIENT_ID, num_train + 1)
    if first_valid + num_valid - 1 > 99999:  # MURA patient ids have 5 digits
        raise SampleError(f"--patients {patients} is too many for 5-digit patient ids")
    patient_plan += [("valid", f"{first_valid + offset:05d}") for offset in range(num_valid)]
    studies: list[PlannedStudy] = []
    position_in_folder: collections.Counter[str] = collections.Counter()
    for folder, patient_id in patient_plan:
        rng = np.random.default_rng([seed, int(patient_id)])
        first_class = position_in_folder[folder] % vocab.NUM_CLASSES
        position_in_folder[folder] += 1
        num_studies = 1 + rng.choice(
            len(STUDIES_PER_PATIENT_WEIGHTS), p=STUDIES_PER_PATIENT_WEIGHTS
        )
        studies_per_region: collections.Counter[str] = collections.Counter()
        for index in range(num_studies):
            if index == 0:
                region_index, abnormal = divmod(first_class, 2)
            else:
                region_index = int(rng.integers(vocab.NUM_REGIONS))
                abnormal = int(rng.random() < ABNORMAL_PROBABILITY)
            region = vocab.REGIONS[region_index]
            studies_per_region[region] += 1
            studies.append(
                PlannedStudy(
                    folder=folder,
                    region=region,
                    patient_id=patient_id,
                    study_number=studies_per_region[region],
                    abnormal=abnormal,
                    num_images=1
                    + int(rng.choice(len(IMAGES_PER_STUDY_WEIGHTS), p=IMAGES_PER_STUDY_WEIGHTS)),
                    defect=("fracture" if rng.random() < 0.5 else "hardware")
                    if abnormal
                    else "none",
                )
            )
    return studies


# --- Drawing -----------------------------------------------------------------------------
# Anatomy is described in a unit square (x right, y down) as bones: capsules from one
# point to another with a width, plus round blobs. A random similarity transform per image
# (rotation, scale, shift) and the canvas's own aspect ratio give each image its own look.


#: A finding's bounding box: (top, left, bottom, right) in source pixels, bottom/right
#: exclusive (so the box holds rows top..bottom-1, as a slice does).
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Bone:
    start: tuple[float, float]
    end: tuple[float, float]
    width: float  # in unit-square units


@dataclass(frozen=True)
class Blob:
    centre: tuple[float, float]
    radius: float


def region_anatomy(region: str, rng: np.random.Generator) -> tuple[list[Bone], list[Blob]]:
    """The bones and blobs of one region, with small anatomical jitter."""

    def jitter(value: float, amount: float = 0.02) -> float:
        return value + float(rng.uniform(-amount, amount))

    if region == "ELBOW":
        bend = math.radians(jitter(40, 12))
        joint = (0.5, 0.5)
        forearm_end = (0.5 + 0.42 * math.sin(bend), 0.5 + 0.42 * math.cos(bend))
        return (
            [
                Bone((0.45, 0.02), joint, 0.13),
                Bone((0.5, 0.52), forearm_end, 0.07),
                Bone((0.44, 0.55), (forearm_end[0] - 0.08, forearm_end[1] + 0.02), 0.06),
            ],
            [Blob(joint, 0.1)],
        )
    if region == "FINGER":
        ends = [0.08, 0.36, 0.6, 0.8, 0.94]
        bones = [
            Bone((0.5, jitter(top) + 0.03), (0.5, jitter(bottom) - 0.03), 0.085 - 0.01 * index)
            for index, (top, bottom) in enumerate(zip(ends, ends[1:], strict=False))
        ]
        return bones, []
    if region == "FOREARM":
        return (
            [Bone((0.38, 0.03), (jitter(0.36), 0.97), 0.08), Bone((0.62, 0.03), (0.6, 0.97), 0.07)],
            [],
        )
    if region == "HAND":
        bones = []
        for finger in range(5):
            angle = math.radians(-40 + 20 * finger + float(rng.uniform(-4, 4)))
            base = (0.5 + 0.06 * (finger - 2), 0.78)
            tip = (base[0] + 0.62 * math.sin(angle), base[1] - 0.62 * math.cos(angle))
            bones.append(Bone(base, tip, 0.045))
        return bones, [Blob((0.5, 0.86), 0.12)]
    if region == "HUMERUS":
        return [Bone((0.5, 0.14), (jitter(0.52), 0.97), 0.15)], [Blob((0.5, 0.12), 0.13)]
    if region == "SHOULDER":
        return (
            [
                Bone((0.05, 0.2), (0.9, jitter(0.12)), 0.06),  # clavicle
                Bone((0.62, 0.5), (jitter(0.72), 0.98), 0.12),  # humeral shaft
                Bone((0.25, 0.3), (0.2, 0.85), 0.1),  # scapula edge
            ],
            [Blob((0.6, 0.45), 0.17), Blob((0.33, 0.45), 0.07)],
        )
    if region == "WRIST":
        carpals = [
            Blob((0.35 + 0.1 * column, 0.45 + 0.1 * row), 0.045)
            for row in range(2)
            for column in range(4)
        ]
        return (
            [
                Bone((0.4, 0.6), (0.38, 0.98), 0.11),
                Bone((0.64, 0.6), (0.66, 0.98), 0.08),
                Bone((0.38, 0.36), (0.34, 0.02), 0.05),
                Bone((0.62, 0.36), (0.66, 0.02), 0.05),
            ],
            carpals,
        )
    raise ValueError(f"no anatomy for region {region!r}")


def draw_radiograph(study: PlannedStudy, image_index: int, seed: int) -> Image.Image:
    """Draw one synthetic radiograph of `study` (an 8-bit image in a MURA-like mode)."""
    return draw_radiograph_and_finding(study, image_index, seed)[0]


def draw_radiograph_and_finding(
    study: PlannedStudy, image_index: int, seed: int
) -> tuple[Image.Image, Box | None]:
    """Draw one synthetic radiograph of `study`, and where its finding is.

    Returns the image and, for an abnormal study, the [top, left, bottom, right) box in the
    image's pixels that holds everything `draw_defect` drew (None for a normal study).
    """
    rng = np.random.default_rng(
        [
            seed,
            int(study.patient_id),
            vocab.REGIONS.index(study.region),
            study.study_number,
            image_index,
        ]
    )
    short_side = int(rng.integers(300, IMAGE_LONG_SIDE + 1))
    if rng.random() < 0.1:  # a few very narrow images, as in the release (e.g. 192x512)
        short_side = int(rng.integers(190, 300))
    width, height = (
        (short_side, IMAGE_LONG_SIDE) if rng.random() < 0.8 else (IMAGE_LONG_SIDE, short_side)
    )

    angle = math.radians(float(rng.uniform(-12, 12)))
    scale = float(rng.uniform(0.88, 1.0))
    shift = rng.uniform(-0.04, 0.04, size=2)

    def to_pixels(point: tuple[float, float]) -> tuple[float, float]:
        x, y = point[0] - 0.5, point[1] - 0.5
        x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
        return ((0.5 + scale * x + shift[0]) * width, (0.5 + scale * y + shift[1]) * height)

    unit = scale * min(width, height) * 0.5 + scale * max(width, height) * 0.5
    bones, blobs = region_anatomy(study.region, rng)

    background = int(rng.integers(8, 30))
    canvas = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    # Soft tissue: a wide, dim version of the bones.
    tissue = int(background + rng.integers(25, 45))
    for bone in bones:
        draw.line(
            [to_pixels(bone.start), to_pixels(bone.end)],
            fill=tissue,
            width=int(unit * bone.width * 2.6),
        )
    canvas = canvas.filter(ImageFilter.GaussianBlur(unit * 0.03))
    draw = ImageDraw.Draw(canvas)

    cortex = int(rng.integers(165, 205))  # below metal (250-255)
    marrow = cortex - int(rng.integers(35, 55))
    for bone in bones:
        start, end = to_pixels(bone.start), to_pixels(bone.end)
        outer = max(3, int(unit * bone.width))
        for width_px, shade in ((outer, cortex), (max(1, int(outer * 0.45)), marrow)):
            draw.line([start, end], fill=shade, width=width_px)
            for x, y in (start, end):
                radius = width_px / 2
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=shade)
    for blob in blobs:
        x, y = to_pixels(blob.centre)
        radius = unit * blob.radius
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=cortex - 10)

    finding = None
    if study.defect != "none":
        drawn = draw_defect(draw, study.defect, bones, to_pixels, unit, background, rng)
        finding = clip_box(drawn, height, width)

    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 2.0))))
    pixels = np.asarray(canvas, dtype=np.float32)
    contrast = float(rng.uniform(0.85, 1.1))
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean() + rng.normal(0, 3.5, pixels.shape)
    gray = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    mode = rng.choice(list(IMAGE_MODE_WEIGHTS), p=list(IMAGE_MODE_WEIGHTS.values()))
    return (gray if mode == "L" else gray.convert(str(mode))), finding


def clip_box(extent: tuple[float, float, float, float], height: int, width: int) -> Box:
    """The integer box covering (top, left, bottom, right) floats, clipped to the image."""
    top, left, bottom, right = extent
    return (
        max(0, math.floor(top)),
        max(0, math.floor(left)),
        min(height, math.ceil(bottom)),
        min(width, math.ceil(right)),
    )


def draw_defect(
    draw, defect, bones, to_pixels, unit, background, rng
) -> tuple[float, float, float, float]:
    """Draw the abnormality on the longest bone: a displaced fracture gap or a metal plate.

    Both are sized in `unit` (about the canvas's mean side) so they stay a few pixels wide
    after the image is padded and shrunk to 64 px. Returns the (top, left, bottom, right)
    pixel extent of every stroke it drew (each stroke's end points grown by half its width),
    unclipped. Recording the extent uses no randomness, so the drawing is unchanged by it.
    """
    extent = [math.inf, math.inf, -math.inf, -math.inf]

    bone = max(bones, key=lambda b: math.dist(b.start, b.end))
    where = float(rng.uniform(0.35, 0.65))
    centre = np.add(bone.start, where * np.subtract(bone.end, bone.start))
    direction = np.subtract(bone.end, bone.start)
    direction = direction / np.linalg.norm(direction)
    normal = np.array([-direction[1], direction[0]])

    def line(a, b, fill: int, width_units: float) -> None:
        points = [to_pixels(tuple(a)), to_pixels(tuple(b))]
        stroke_width = max(4, int(unit * width_units))
        draw.line(points, fill=fill, width=stroke_width)
        for x, y in points:
            extent[0] = min(extent[0], y - stroke_width / 2)
            extent[1] = min(extent[1], x - stroke_width / 2)
            extent[2] = max(extent[2], y + stroke_width / 2)
            extent[3] = max(extent[3], x + stroke_width / 2)

    if defect == "fracture":
        # A wide dark gap across the bone, slanted and longer than the bone is wide, then the
        # distal fragment displaced sideways (a visible step in the cortex).
        slant = normal + direction * float(rng.uniform(-0.4, 0.4))
        half = slant * max(bone.width, 0.07) * 1.6
        line(centre - half, centre + half, background + 5, 0.085)
        step = normal * max(bone.width, 0.06) * float(rng.choice([-0.7, 0.7]))
        line(
            centre + direction * 0.07 + step,
            centre + direction * 0.26 + step,
            int(rng.integers(150, 190)),
            max(bone.width, 0.05) * 0.9,
        )
        line(
            centre + direction * 0.045 - half * 0.8,
            centre + direction * 0.045 + half * 0.8,
            background + 5,
            0.03,
        )
    else:
        # Hardware: a bright plate along the bone and screws crossing it, brighter than bone
        # and reaching into the soft tissue on both sides.
        along = direction * 0.22
        offset = normal * bone.width * 0.75
        line(centre - along + offset, centre + along + offset, 255, 0.06)
        for fraction in (-0.85, -0.3, 0.3, 0.85):
            screw_centre = centre + along * fraction
            reach = normal * max(bone.width, 0.06) * 1.3
            line(screw_centre - reach, screw_centre + reach + offset, 250, 0.025)
    return (extent[0], extent[1], extent[2], extent[3])


# --- Writing -----------------------------------------------------------------------------


def generate_sample(
    output_dir: str | pathlib.Path, patients: int = DEFAULT_PATIENTS, seed: int = 0
) -> pathlib.Path:
    """Write a synthetic MURA tree under `output_dir`; returns the MURA-v1.1 folder.

    `output_dir` is a local folder (created if missing); an existing MURA-v1.1 inside it is
    replaced. Use `main()` for the refusing-to-overwrite command-line behaviour.
    """
    output_dir = pathlib.Path(output_dir)
    mura_root = output_dir / vocab.MURA_ROOT_NAME
    if mura_root.exists():
        shutil.rmtree(mura_root)
    studies = plan_studies(patients, seed)
    image_lines: dict[str, list[str]] = {folder: [] for folder in vocab.MURA_FOLDERS}
    study_lines: dict[str, list[str]] = {folder: [] for folder in vocab.MURA_FOLDERS}
    findings: dict[str, list[int]] = {}
    for study in studies:
        study_dir = output_dir / study.relative_dir
        study_dir.mkdir(parents=True, exist_ok=True)
        study_lines[study.folder].append(f"{study.relative_dir},{study.abnormal}")
        for image_index in range(1, study.num_images + 1):
            relative_path = f"{study.relative_dir}image{image_index}.png"
            image, finding = draw_radiograph_and_finding(study, image_index, seed)
            image.save(output_dir / relative_path, compress_level=PNG_COMPRESS_LEVEL)
            image_lines[study.folder].append(relative_path)
            if finding is not None:
                findings[relative_path] = list(finding)
    for folder in vocab.MURA_FOLDERS:
        (mura_root / folder).mkdir(parents=True, exist_ok=True)
        (mura_root / vocab.IMAGE_PATHS_CSV.format(folder=folder)).write_text(
            "".join(line + "\n" for line in image_lines[folder])
        )
        (mura_root / vocab.LABELED_STUDIES_CSV.format(folder=folder)).write_text(
            "".join(line + "\n" for line in study_lines[folder])
        )
    # Beside MURA-v1.1/, not in it: the release has no such file, and a reader of the
    # MURA layout must see exactly the release's files.
    (output_dir / FINDINGS_FILE).write_text(json.dumps(findings, indent=1, sort_keys=True) + "\n")
    return mura_root


def read_findings(sample_dir: str | pathlib.Path) -> dict[str, Box]:
    """The findings a sample recorded: {image path relative to `sample_dir` (as in the
    MURA CSVs): (top, left, bottom, right) box in source pixels} for every abnormal image."""
    path = pathlib.Path(sample_dir) / FINDINGS_FILE
    if not path.is_file():
        raise SampleError(f"{path}: no findings file (write the sample with bonify-sample)")
    return {name: tuple(box) for name, box in json.loads(path.read_text()).items()}


def summarize(studies: Sequence[PlannedStudy]) -> str:
    """A table of images, studies and patients per MURA folder, and images per class."""
    lines = []
    for folder in vocab.MURA_FOLDERS:
        in_folder = [s for s in studies if s.folder == folder]
        images = sum(s.num_images for s in in_folder)
        patients = len({s.patient_id for s in in_folder})
        lines.append(
            f"  {folder:<6} {images:>6} images {len(in_folder):>6} studies {patients:>6} patients"
        )
    per_class: collections.Counter[str] = collections.Counter()
    for study in studies:
        label = vocab.label_of(vocab.REGIONS.index(study.region), study.abnormal)
        per_class[vocab.CLASS_NAMES[label]] += study.num_images
    lines.append(
        "  images per class: "
        + ", ".join(f"{name} {per_class[name]}" for name in vocab.CLASS_NAMES)
    )
    return "\n".join(lines)


SAMPLE_DESCRIPTION = f"""\
Write a synthetic MURA v1.1 dataset to OUTPUT_DIR/MURA-v1.1/: the release's folder layout
and 4 CSVs, with synthetic radiographs in which each of the 14 classes (7 body regions x
normal/abnormal) is visible, so that a model can learn it. It is the demo's and the tests'
data, for machines without the real MURA download. The same seed writes the same bytes.
By default {DEFAULT_PATIENTS} patients: about 780 images in 15 s."""

SAMPLE_EXAMPLES = """\
# the demo's data (what `make demo` runs)
bonify-sample --output_dir demo_output/raw
# a smaller tree with another seed, replacing an earlier one
bonify-sample --output_dir /tmp/mura --patients 40 --seed 1 --overwrite
# then turn it into training data
bonify-preprocess --input_dir /tmp/mura --output_dir /tmp/mura-tfrecords --image_size 128"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The generator's arguments (a usage error is one SampleError line)."""
    parser = OneLineArgumentParser(
        prog="bonify-sample", description=SAMPLE_DESCRIPTION, examples=SAMPLE_EXAMPLES
    )
    parser.add_argument("--output_dir", required=True, help="local folder to write MURA-v1.1/ into")
    parser.add_argument(
        "--patients",
        type=int,
        default=DEFAULT_PATIENTS,
        help=f"number of patients (default {DEFAULT_PATIENTS}: ~780 images, ~15 s; "
        f"{VALID_PATIENT_FRACTION * 100:.0f}%% go to valid/)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUTPUT_DIR/MURA-v1.1/"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command("bonify-sample", lambda argv: write_sample_command(parse_args(argv)), argv)


def write_sample_command(args: argparse.Namespace) -> int:
    """Write the sample `args` describe and print its summary."""
    if args.output_dir.startswith("gs://"):
        raise SampleError(
            "--output_dir must be a local folder; copy the sample to gs:// afterwards"
        )
    if pathlib.Path(args.output_dir).exists() and not pathlib.Path(args.output_dir).is_dir():
        raise SampleError(f"--output_dir {args.output_dir} exists and is not a folder")
    mura_root = pathlib.Path(args.output_dir) / vocab.MURA_ROOT_NAME
    if mura_root.exists() and any(mura_root.iterdir()) and not args.overwrite:
        raise SampleError(
            f"{mura_root} already exists and is not empty; pass --overwrite to replace it"
        )
    started = time.perf_counter()
    studies = plan_studies(args.patients, args.seed)
    generate_sample(args.output_dir, patients=args.patients, seed=args.seed)
    print(
        f"bonify-sample: wrote {mura_root} in {time.perf_counter() - started:.1f} s (seed {args.seed})"
    )
    print(summarize(studies))
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
