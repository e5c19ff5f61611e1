"""Benchmark of Grad-CAM's faithfulness on a trained model (not a test).

The pointing game: on every abnormal image of a split, does the peak of the Grad-CAM map lie
inside the box where `bonify-sample` drew the finding (fracture gap or plate), give or take a
margin of 5% of the image's long side? Reported for the map of the true class and of the
predicted class (what `bonify-predict --gradcam_dir` draws), against chance: the mean share
of the image that the (grown) box covers, i.e. the hit rate of a uniformly random peak.

    .venv/bin/python benchmarks/gradcam.py --model demo_output/job \\
        --data_dir demo_output/tfrecords --sample_dir demo_output/raw

--sample_dir is the folder holding MURA-v1.1/ and findings.json (the Beam job's input).
A sample written before findings.json existed gets it by regenerating the same tree (same
--patients and --seed: the images are byte-identical) elsewhere and pointing --sample_dir
there: `bonify-sample --output_dir /tmp/raw`. Run from the repository root.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="JOB dir, JOB/model or a .keras file")
    parser.add_argument("--data_dir", required=True, help="the Beam job's output (shards)")
    parser.add_argument("--sample_dir", required=True, help="folder with findings.json")
    parser.add_argument("--split", default="test")
    parser.add_argument("--margin", type=float, default=None, help="share of the long side")
    args = parser.parse_args()

    from bonify.model_card import resolve_model
    from bonify.sample import FINDINGS_FILE

    if not (pathlib.Path(args.sample_dir) / FINDINGS_FILE).is_file():
        raise SystemExit(
            f"{args.sample_dir}/{FINDINGS_FILE} is missing: regenerate the sample with the same "
            "--patients/--seed into another folder (bonify-sample --output_dir DIR) and pass it"
        )
    model_file = resolve_model(args.model)

    import keras

    from serve.gradcam import POINTING_MARGIN_FRACTION, pointing_game

    model = keras.saving.load_model(model_file)
    started = time.perf_counter()
    result = pointing_game(
        model,
        args.data_dir,
        args.sample_dir,
        split=args.split,
        margin_fraction=args.margin if args.margin is not None else POINTING_MARGIN_FRACTION,
    )
    seconds = time.perf_counter() - started
    print(f"model {model_file}, split {args.split}, {seconds:.1f} s")
    print(result.summary())
    print(
        f"hits: true class {result.hits_true}/{result.images}, "
        f"predicted class {result.hits_predicted}/{result.images}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
