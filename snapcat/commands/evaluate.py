"""``snapcat evaluate``: metrics, report and the release gate for an exported model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.metrics import GateConfig

    g = GateConfig()
    p = sub.add_parser(
        "evaluate",
        help="evaluate an exported model and decide whether it may be released",
        description=(
            "Runs the exported serving signature on a split and writes metrics.json "
            "(top-1/top-3, per-category precision/recall/F1, gate decision), "
            "confusion_matrix.png and report.html. With --baseline (the production model's "
            "metrics.json) the model is blessed only if it is not worse beyond the tolerances; "
            "without, only if it clears the absolute floors."
        ),
    )
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--model", required=True, help="MODEL_DIR (highest version) or MODEL_DIR/<v>")
    p.add_argument("--output", required=True, help="folder for metrics.json and report.html")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--baseline", help="metrics.json of the model in production (path or URI)")
    p.add_argument("--max-top1-drop", type=float, default=g.max_top1_drop)
    p.add_argument("--max-top3-drop", type=float, default=g.max_top3_drop)
    p.add_argument("--max-class-recall-drop", type=float, default=g.max_class_recall_drop)
    p.add_argument(
        "--min-class-support",
        type=int,
        default=g.min_class_support,
        help="categories with fewer test photos are not recall-gated",
    )
    p.add_argument("--min-top1", type=float, default=g.min_top1, help="floor without a baseline")
    p.add_argument("--min-top3", type=float, default=g.min_top3, help="floor without a baseline")
    p.add_argument(
        "--max-ece-increase",
        type=float,
        default=g.max_ece_increase,
        help="refuse a model whose expected calibration error exceeds the baseline's by more",
    )
    p.add_argument(
        "--fail-if-refused",
        action="store_true",
        help="exit 3 when the gate refuses the model (for scripts)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def gate_from_args(args: argparse.Namespace):
    from snapcat.metrics import GateConfig

    return GateConfig(
        max_top1_drop=args.max_top1_drop,
        max_top3_drop=args.max_top3_drop,
        max_class_recall_drop=args.max_class_recall_drop,
        min_class_support=args.min_class_support,
        min_top1=args.min_top1,
        min_top3=args.min_top3,
        max_ece_increase=args.max_ece_increase,
    )


def run(args: argparse.Namespace) -> int:
    from snapcat.cli import UserError
    from snapcat.evaluation import EvaluateConfig, EvaluationError, evaluate

    config = EvaluateConfig(
        data=args.data,
        model=args.model,
        output=args.output,
        split=args.split,
        baseline=args.baseline,
        gate=gate_from_args(args),
        progress=not args.no_progress,
    )
    try:
        metrics = evaluate(config)
    except EvaluationError as exc:
        raise UserError(str(exc)) from exc
    print(
        f"{metrics['split']}: n={metrics['n']} top1={metrics['top1']:.4f} "
        f"top3={metrics['top3']:.4f} macro_f1={metrics['macro_f1']:.4f}"
    )
    c = metrics["calibration"]

    def figure(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    print(
        f"calibration: T={c['temperature']:.3f} ECE {figure(c['ece_before'])} -> "
        f"{figure(c['ece'])}, NLL {figure(c['nll_before'])} -> {figure(c['nll'])}; confident on "
        f"{100 * c['confidence']['coverage']:.1f}% of photos, top-3 accuracy there "
        f"{figure(c['confidence']['top3_confident'])}"
    )
    print(f"gate: {'BLESSED' if metrics['blessed'] else 'REFUSED'}")
    for reason in metrics["reasons"]:
        print(f"  - {reason}")
    print(f"report: {args.output}/report.html")
    return 3 if args.fail_if_refused and not metrics["blessed"] else 0
