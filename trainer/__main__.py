"""`bonify-train` (`python -m trainer`): only parses arguments; `trainer.run.train` does the work.

See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bonify.cli import OneLineArgumentParser, run_command

DESCRIPTION = """\
Train the 14-class MURA model on the shards that bonify-preprocess wrote, in phases
(by default the reference recipe: DenseNet169, focal loss, three phases), and write
checkpoints, TensorBoard logs and the final model under --job_dir. Validation reports the
study-level kappa and AUROC (MURA's metric) every epoch; training.monitor chooses what picks
the best weights. At the end the final model's operating point (threshold, temperature) is
fitted on the validation split and written into its model card.

Rerunning the same command resumes from the latest checkpoint (after a crash, a kill or a
preemption); on a finished job it prints the summary and exits. The same command runs on one
CPU, one GPU, all GPUs of a node or (with TF_CONFIG) several nodes.

The configuration is built in layers, each overriding the one before: built-in defaults,
then --config, then each --set in order, then --strategy/--mixed_precision/--xla.
--print_config shows the result. Exit codes: 0 done, 2 user error (one line naming the
file, key or flag), 130 after Ctrl-C, 143 after SIGTERM (both save a checkpoint first)."""

EXAMPLES = """\
# The demo: the small CNN on the generated sample (what `make demo` runs)
bonify-train --data_dir demo_output/tfrecords --job_dir demo_output/job --config sample_cpu
# The MURA recipe on one GPU node (every GPU of the node is used)
bonify-train --data_dir gs://BUCKET/tfrecords/mura-320 --job_dir gs://BUCKET/jobs/densenet169 --config mura_densenet169
# The same recipe selecting by MURA's metric, the validation study kappa (docs/RECIPES.md)
bonify-train --data_dir gs://BUCKET/tfrecords/mura-320 --job_dir gs://BUCKET/jobs/study --config mura_study
# Force MirroredStrategy and float16 mixed precision
bonify-train --data_dir DATA --job_dir JOB --strategy mirrored --mixed_precision float16
# Override keys: a value, a nested key, a list, a key of the first phase, a whole phase list
bonify-train --data_dir DATA --job_dir JOB --set training.seed=7 --set data.augment.brightness=0.1
bonify-train --data_dir DATA --job_dir JOB --set model.head_units=[256] --set model.head_dropout=[0.3]
bonify-train --data_dir DATA --job_dir JOB --set phases.0.epochs=5 --set phases.0.learning_rate=3e-4
bonify-train --data_dir DATA --job_dir JOB --set 'phases=[{name: only, trainable: all, epochs: 3}]'
# See every key and its value after all layers, without training
bonify-train --config sample_cpu --set training.seed=7 --print_config
# Resume after an interruption: rerun the same command
bonify-train --data_dir demo_output/tfrecords --job_dir demo_output/job --config sample_cpu"""

STRATEGY_HELP = """\
how to spread training over devices (the distribute.strategy key):
auto (default) = multi_worker when TF_CONFIG names more than one task, else mirrored
when the host has more than one GPU, else default; default = one device (CPU or one GPU);
mirrored = MirroredStrategy over every GPU of this host (or over the CPU split into
distribute.logical_cpus devices); multi_worker = MultiWorkerMirroredStrategy over the
TF_CONFIG cluster (or --tf_config_from_k8s)"""

PRECISION_HELP = """\
the distribute.mixed_precision key: auto (default) = float16 when a GPU has compute
capability >= 7.0 (Volta and later), else off; float16 = mixed float16 with dynamic loss
scaling; bfloat16 = mixed bfloat16 (recent CPUs, TPUs, Ampere GPUs); off = float32"""

SET_HELP = """\
override one config key, repeatable and applied in order; VALUE is YAML: numbers
(7, 3e-4), true/false, strings, lists ([256, 128]), mappings ({enabled: false});
dots walk into mappings and phase numbers (phases.0.epochs=5). Unknown keys are errors
naming the key. --print_config lists every key"""


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="bonify-train", description=DESCRIPTION, examples=EXAMPLES)
    parser.add_argument(
        "--data_dir", help="the Beam job's output: shards + manifest.json (local or gs://)"
    )
    parser.add_argument(
        "--job_dir",
        help="where checkpoints, logs and models go (local or gs://); rerun to resume it",
    )
    parser.add_argument(
        "--config",
        metavar="FILE_OR_NAME",
        help="a YAML file, or a shipped config: mura_densenet169 (the built-in defaults), "
        "mura_study (the same, selecting by validation study kappa) or sample_cpu (the demo)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP
    )
    parser.add_argument(
        "--strategy", choices=["auto", "default", "mirrored", "multi_worker"], help=STRATEGY_HELP
    )
    parser.add_argument(
        "--mixed_precision", choices=["auto", "float16", "bfloat16", "off"], help=PRECISION_HELP
    )
    parser.add_argument(
        "--xla",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA-compile the train step (the distribute.xla key)",
    )
    parser.add_argument(
        "--tf_config_from_k8s",
        action="store_true",
        help="build TF_CONFIG from the Kubernetes Indexed Job environment (k8s/ manifests)",
    )
    parser.add_argument(
        "--print_config",
        action="store_true",
        help="print the resolved config (all layers applied) as YAML and exit; "
        "--data_dir and --job_dir are not needed",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see `bonify-train --help` and docs/TRAINING.md)."""
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [flag for flag in ("data_dir", "job_dir") if not getattr(args, flag)]
    if missing and not args.print_config:
        parser.error(f"missing {' and '.join('--' + flag for flag in missing)}")
    return args


def print_config(args: argparse.Namespace) -> None:
    """The config `train` would use, as YAML on stdout (no TensorFlow import for local files)."""
    from trainer.config import dump_config, flag_overrides, load_config

    overrides = [*args.set, *flag_overrides(args.strategy, args.mixed_precision, args.xla)]
    print(dump_config(load_config(args.config, overrides), one_key_per_line=True), end="")


def _main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_config:
        print_config(args)
        return 0
    from trainer.run import train

    return train(
        args.data_dir,
        args.job_dir,
        config_file=args.config,
        overrides=args.set,
        strategy_name=args.strategy,
        mixed_precision=args.mixed_precision,
        xla=args.xla,
        tf_config_from_k8s=args.tf_config_from_k8s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; 0 done, 2 user error, 130 after Ctrl-C, 143 after a SIGTERM save."""
    return run_command("bonify-train", _main, argv)


def console_main() -> None:
    """Entry point of the `bonify-train` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
