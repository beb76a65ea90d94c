"""``snapcat evaluate``: metrics, report and the release gate for an exported model."""

from __future__ import annotations

import argparse

from snapcat.commands import DefaultsHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.evaluate.gate import GateConfig

    g = GateConfig()
    p = sub.add_parser(
        "evaluate",
        formatter_class=DefaultsHelpFormatter,
        help="evaluate an exported model and decide whether it may be released",
        description=(
            "Runs the exported serving signature on a split and writes metrics.json "
            "(top-1/top-3, per-category precision/recall/F1, gate decision), "
            "confusion_matrix.png and report.html. With --baseline-model (or --baseline-isvc, "
            "which reads the production model's URI from the live InferenceService) the "
            "production model is evaluated on the same photos, and the candidate is blessed "
            "unless it is significantly worse (95% paired interval below zero) by more than a "
            "tolerance on top-1, top-3 or a category's recall. --baseline (a stored "
            "metrics.json, other photos) is the labelled fallback. Without any baseline the "
            "model must clear the absolute floors."
        ),
    )
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--model", required=True, help="MODEL_DIR (highest version) or MODEL_DIR/<v>")
    p.add_argument("--output", required=True, help="folder for metrics.json and report.html")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument(
        "--baseline-model",
        metavar="URI",
        help="the production model (MODEL_DIR or MODEL_DIR/<version>, local or s3://, gs://): "
        "evaluated on the same photos for a paired comparison",
    )
    p.add_argument(
        "--baseline-isvc",
        metavar="[NAMESPACE/]NAME",
        help="read the production model's URI from this live InferenceService (default "
        "namespace snapcat); if no cluster is reachable, --baseline is used instead",
    )
    p.add_argument("--kubeconfig", help="for --baseline-isvc (default: $KUBECONFIG or in-cluster)")
    p.add_argument("--context", help="kubeconfig context for --baseline-isvc")
    p.add_argument(
        "--baseline",
        "--baseline-metrics",
        dest="baseline",
        help="fallback: metrics.json of the production model (path or URI), measured on the "
        "photos it was evaluated on; not a paired comparison",
    )
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
    from snapcat.commands import config_from_args
    from snapcat.evaluate.gate import GateConfig

    return config_from_args(GateConfig, args, defaults=("resamples", "seed"))


def run(args: argparse.Namespace) -> int:
    from snapcat.commands import config_from_args
    from snapcat.errors import UserError
    from snapcat.evaluate.evaluation import (
        EvaluateConfig,
        evaluate,
        find_production_model,
    )

    baseline_model, lookup = args.baseline_model, None
    if args.baseline_isvc and not baseline_model:
        namespace, _, name = args.baseline_isvc.rpartition("/")
        baseline_model, lookup = find_production_model(
            name, namespace or "snapcat", kubeconfig=args.kubeconfig, context=args.context
        )
        if baseline_model is None and not args.baseline:
            raise UserError(f"{lookup}; pass --baseline-model, or --baseline as a fallback")
    config = config_from_args(
        EvaluateConfig,
        args,
        renames={"baseline_metrics": "baseline"},
        defaults=("batch_size", "gallery_per_class", "disagreements"),
        baseline_model=baseline_model,
        baseline_lookup=lookup,
        gate=gate_from_args(args),
        progress=not args.no_progress,
    )
    metrics = evaluate(config)
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
    if metrics.get("comparison"):
        c, b = metrics["comparison"], metrics["baseline"]
        print(f"production {b['uri']}: n={b['n']} top1={b['top1']:.4f} top3={b['top3']:.4f}")
        for name in ("top1", "top3"):
            low, high = c[name]["ci95"]
            print(
                f"  {name} difference {c[name]['difference']:+.4f} "
                f"(95% interval {low:+.4f} to {high:+.4f}, McNemar p={c[name]['mcnemar_p']:.3g})"
            )
    print(f"gate: {'BLESSED' if metrics['blessed'] else 'REFUSED'}")
    for reason in metrics["reasons"]:
        print(f"  - {reason}")
    print(f"report: {args.output}/report.html")
    return 3 if args.fail_if_refused and not metrics["blessed"] else 0
