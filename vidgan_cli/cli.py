"""``vidgan SUBCOMMAND [hydra overrides]``: dispatch to the Hydra app of that subcommand.

Each subcommand is its own module with its own ``@hydra.main``, so job names, log files and config
roots never collide.  Nothing heavy is imported here: ``vidgan --help`` must stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys

SUBCOMMANDS = {
    "train": ("vidgan_cli.train.app", "train a video GAN (Hydra app; -m for sweeps)"),
    "generate": ("vidgan_cli.generate", "sample clips from a checkpoint to MP4/GIF/PNG"),
    "evaluate": ("vidgan_cli.evaluate", "compute FVD/KVD and the shapes metrics of a checkpoint"),
    "prepare": ("vidgan_cli.prepare", "decode a folder of videos once into a training cache"),
    "report": ("vidgan_cli.report", "write a self-contained HTML report of a run or a sweep"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: vidgan SUBCOMMAND [overrides ...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "train, generate, evaluate and prepare are Hydra apps: `vidgan train --help` lists",
              "the config groups, `vidgan train --cfg job` prints the composed config, `-m` sweeps.",
              "`vidgan report PATH` takes a run or sweep folder."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from vidgan_cli import __version__
        print(f"vidgan {__version__}")
        return
    name = args[0]
    if name not in SUBCOMMANDS:
        print(f"vidgan: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(SUBCOMMANDS[name][0])
    overrides = args[1:]
    if os.environ.get("RANK", "0") != "0" and name == "train":
        # torchrun: only rank 0 writes the run folder (.hydra/, train.log); other ranks log to stderr.
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    # Hydra parses sys.argv itself; hand it only the overrides that follow the subcommand.
    sys.argv = [f"vidgan {name}", *overrides]
    module.main()
