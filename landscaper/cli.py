"""The ``landscaper`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    import torch

    from . import Objective
    from .examples import digits_data, digits_mlp, train_classifier
    from .hessian import top_eigenpairs

    start = time.perf_counter()
    x, y = digits_data()
    model = train_classifier(digits_mlp(), x, y, epochs=5 if args.quick else 30)
    objective = Objective(model, (x, y), torch.nn.functional.cross_entropy)
    result = top_eigenpairs(objective, k=args.k)
    print(f"digits MLP: {objective.num_params} parameters, {objective.num_samples} samples, "
          f"loss {float(objective()):.4f}")
    print(f"top-{args.k} Hessian eigenvalues: "
          + ", ".join(f"{v:.5g}" for v in result.eigenvalues)
          + f"  ({result.n_hvp} Hessian-vector products, {time.perf_counter() - start:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="landscaper", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse a small digits model trained on the spot")
    demo.add_argument("--quick", action="store_true", help="train briefly (smoke run)")
    demo.add_argument("-k", type=int, default=5, help="number of eigenvalues (default 5)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscaper`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
