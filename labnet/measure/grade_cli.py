"""``labnet grade``'s flags and what each form does (``labnet.cli`` registers it with one call).

Forms::

    labnet grade SUBMISSIONS_DIR --out DIR [--select ROWS] [--fresh] [--budget S] [--memory-limit SIZE]
    labnet grade --init DIR                  # a commented labnet.toml to fill in
    labnet grade --check SUBMISSIONS_DIR     # every manifest's problems (file:field: problem); runs nothing

and, hidden, ``--one FOLDER --work DIR --child-json FILE``: the child that grades one submission (inside
its namespace).  Exit status: 0 done, 1 ``--check`` found problems, 2 bad arguments, 130 interrupted.

Imports ``errors`` and the grading modules only; no sockets of its own.
"""

from __future__ import annotations

import argparse
import sys

from labnet.errors import UsageError
from labnet.measure import grade
from labnet.measure.grade_manifest import write_template

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def add_parser(sub) -> None:
    """Add ``grade`` to the subcommands ``sub`` of ``labnet``'s parser."""
    p = sub.add_parser("grade", help="grade a class: every submission's server and client, a class table",
                       description="Each folder of SUBMISSIONS_DIR with a labnet.toml is probed, run on the "
                                   "selected ETS rows beside labnet's own servers, and its client run against "
                                   "labnet's server; one at a time, time- and memory-limited, in a network "
                                   "namespace where possible.  Resumes --out.  NOT a sandbox: see README, "
                                   "'Grading a class'.")  # fmt: skip
    p.add_argument("submissions", nargs="?", help="folder of submission folders (one per student)")
    p.add_argument("--out", default=None, help="output folder: results per submission, class.csv/.md/.html")
    p.add_argument("--select", default=None,
                   help="rows: quick (default), ETS row numbers (1,5,28), or op:volume:clients:workers "
                        "(upload:1MB:4:2); MB = 10^6 bytes")  # fmt: skip
    p.add_argument("--init", metavar="DIR", default=None, help="write a commented labnet.toml into DIR")
    p.add_argument("--check", action="store_true", help="check every manifest and run nothing")
    p.add_argument("--fresh", action="store_true", help="grade submissions that have a result again")
    p.add_argument("--budget", type=_seconds, default=None,
                   help=f"seconds per submission (default {grade.DEFAULT_BUDGET:g}; limits.time_budget wins)")
    p.add_argument("--memory-limit", default=None,
                   help=f"a server over this is stopped (default {grade.DEFAULT_MEMORY}; limits.memory wins)")
    p.add_argument("--netns", dest="netns", action="store_true", default=None,
                   help="require network namespaces (fail when they cannot be made)")  # fmt: skip
    p.add_argument("--no-netns", dest="netns", action="store_false", help="run on loopback, without namespaces")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.init:
        print(f"wrote {write_template(args.init)}: fill it in, then run labnet grade --check")
        return 0
    if args.one:
        if not (args.work and args.child_json):
            raise UsageError("--one needs --work and --child-json (it is the grader's own child)")
        return grade.child_main(args.one, args.work, args.child_json, select=args.select,
                                budget=args.budget or grade.DEFAULT_BUDGET,
                                memory_limit=args.memory_limit or grade.DEFAULT_MEMORY)  # fmt: skip
    if not args.submissions:
        raise UsageError("give SUBMISSIONS_DIR (or --init DIR)")
    if args.check:
        problems = grade.check_class(args.submissions)
        print("\n".join(problems) if problems else "every manifest is usable")
        return EXIT_FAILED if problems else 0
    if not args.out:
        raise UsageError("give --out DIR: where the results and the class table go")
    try:
        summary = grade.grade_class(args.submissions, args.out, select=args.select, fresh=args.fresh,
                                    budget=args.budget, memory_limit=args.memory_limit, use_netns=args.netns,
                                    say=lambda m: print(m, flush=True))  # fmt: skip
    except KeyboardInterrupt:
        print("labnet: interrupted; finished submissions are kept: run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(f"graded {len(summary.graded)} now, {len(summary.skipped)} kept from before; wrote "
          f"{', '.join(str(p) for p in summary.table_paths.values())}")  # fmt: skip
    return 0
