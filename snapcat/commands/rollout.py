"""``snapcat rollout``: canary, promote, rollback and status of the model's InferenceService."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="ship a new model version to a slice of traffic, then promote or roll it back",
        description=(
            "Canary rollouts of the KServe InferenceService (Knative mode). Every command waits "
            "for the result with --timeout; --dry-run prints the request as YAML and contacts no "
            "cluster: exact with --current (the live object), otherwise built from manifests/base "
            "with the lines the live object decides marked. See docs/deploy.md."
        ),
    )
    actions = p.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")

    c = actions.add_parser(
        "canary",
        help="send PERCENT%% of the traffic to a new model",
        description=(
            "Points the predictor's storageUri at the new model with canaryTrafficPercent: "
            "PERCENT (the transformer has no model of its own). If the new revision is not ready within "
            "--timeout, the canary is rolled back and the command fails."
        ),
    )
    c.add_argument("--model-uri", required=True, help="TF Serving model folder (gs://, s3://, ...)")
    c.add_argument(
        "--percent", required=True, type=int, help="share of traffic for the new model, 0-99"
    )
    c.add_argument(
        "--check-classes",
        action="store_true",
        help="refuse a model whose class list differs from the current one, and warn when its "
        "backbone is not the one the predictor's TF Serving threads are sized for (reads both "
        "models)",
    )
    c.add_argument(
        "--auto",
        action="store_true",
        help="after the canary is ready, judge it on live metrics (as `rollout analyze` does) "
        "and promote or roll it back; needs --prometheus-url",
    )
    _analysis_flags(c, auto=True)
    _common(c, writes=True)
    c.set_defaults(handler=_run_canary)

    an = actions.add_parser(
        "analyze",
        help="decide promote / rollback / wait from the canary's live metrics",
        description=(
            "Reads per-version metrics of the canary and the stable version from Prometheus over "
            "--window and compares them: error rate, p95 latency, predicted-category mix "
            "(Jensen-Shannon divergence), top-1 score distribution and, once enough sellers' "
            "answers arrived, top-1/top-3 agreement. Promotes only when every required check ran "
            "on valid data from enough served requests on both sides; missing or garbage evidence "
            "is WAIT, and ROLLBACK when still so at the end of --wait. Exit status: 0 promote, "
            "3 rollback, 4 wait, 2 an error (Prometheus unreachable, too slow or answering "
            "garbage). See docs/deploy.md."
        ),
    )
    _analysis_flags(an, auto=False)
    an.add_argument("--json", action="store_true", help="print the decision as JSON")
    an.set_defaults(handler=_run_analyze)

    pr = actions.add_parser("promote", help="give the canary all traffic")
    pr.add_argument(
        "--model-uri", help="refuse unless this is the model being rolled out (the canary's URI)"
    )
    _common(pr, writes=True)
    pr.set_defaults(handler=_run_promote)

    rb = actions.add_parser(
        "rollback", help="pin all traffic to the previous revision (canaryTrafficPercent: 0)"
    )
    _common(rb, writes=True)
    rb.set_defaults(handler=_run_rollback)

    st = actions.add_parser("status", help="traffic split, revisions, readiness and URLs")
    st.add_argument("--yaml", action="store_true", help="print the summary as YAML")
    _common(st, writes=False)
    st.set_defaults(handler=_run_status)


def _analysis_flags(p: argparse.ArgumentParser, auto: bool) -> None:
    from snapcat.rollout import Thresholds
    from snapcat.rollout.analysis import DEFAULT_WINDOW

    t = Thresholds()
    p.add_argument(
        "--prometheus-url",
        required=not auto,
        help="Prometheus base URL, e.g. http://prometheus.monitoring:9090",
    )
    p.add_argument(
        "--window", default=DEFAULT_WINDOW, help="how far back to look (default %(default)s)"
    )
    p.add_argument("--canary-version", help="model_version of the canary (default: newest seen)")
    p.add_argument(
        "--stable-version", help="model_version of stable (default: busiest other one seen)"
    )
    p.add_argument(
        "--analysis-timeout" if auto else "--wait",
        dest="analysis_timeout",
        type=float,
        default=3600.0 if auto else 0.0,
        help="seconds to keep asking while the answer is 'wait'"
        + (" (default 3600)" if auto else " (default 0: answer once)"),
    )
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between analyses (default 60)"
    )
    if auto:
        p.add_argument(
            "--undecided",
            choices=("rollback", "keep"),
            default="rollback",
            help="what to do when still undecided at --analysis-timeout (default rollback)",
        )
    g = p.add_argument_group("thresholds")
    for name, text in THRESHOLD_HELP.items():
        default = getattr(t, name)
        g.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{text} ({default})",
        )


#: What each field of :class:`snapcat.rollout.Thresholds` limits: one flag each.
THRESHOLD_HELP = {
    "min_requests": "requests each version must serve before any decision (bad photos and "
    "refused requests do not count)",
    "max_error_rate_increase": "canary minus stable error rate",
    "max_latency_ratio": "canary over stable p95 latency",
    "max_category_divergence": "Jensen-Shannon divergence of the predicted categories",
    "max_score_shift": "largest gap between the top-1 score distributions",
    "min_feedback": "sellers' answers per version before agreement counts",
    "max_agreement_drop": "stable minus canary top-1/top-3 agreement",
}


def _thresholds(args: argparse.Namespace):
    from snapcat.rollout import Thresholds

    return Thresholds(**{name: getattr(args, name) for name in THRESHOLD_HELP})


def _common(p: argparse.ArgumentParser, writes: bool) -> None:
    from snapcat.rollout import DEFAULT_NAME, DEFAULT_POLL, DEFAULT_TIMEOUT

    p.add_argument(
        "--name", default=DEFAULT_NAME, help=f"InferenceService (default {DEFAULT_NAME})"
    )
    p.add_argument("--namespace", "-n", required=True, help="its namespace")
    p.add_argument("--kubeconfig", help="kubeconfig file (default $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the request as YAML instead of sending it; contacts no cluster (exact with "
        "--current; without it, lines that take the live object's values are marked)",
    )
    p.add_argument(
        "--current",
        metavar="FILE",
        help="YAML of the live object (kubectl get isvc NAME -o yaml) to work from instead of "
        "reading the cluster; without it a dry run assumes the object manifests/base deploys",
    )
    if writes:
        p.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            help=f"seconds to wait for the result (default {DEFAULT_TIMEOUT:g})",
        )
        p.add_argument("--poll", type=float, default=DEFAULT_POLL, help="seconds between checks")
        p.add_argument("--no-wait", action="store_true", help="send the change and return")


def _current(args: argparse.Namespace) -> dict | None:
    if not args.current:
        return None
    import yaml

    from snapcat.errors import UserError

    try:
        with open(args.current, encoding="utf-8") as handle:
            docs = [d for d in yaml.safe_load_all(handle) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read --current {args.current}: {exc}") from exc
    if len(docs) != 1 or not isinstance(docs[0], dict) or docs[0].get("kind") != "InferenceService":
        raise UserError(f"--current {args.current} must hold exactly one InferenceService")
    return docs[0]


def _options(args: argparse.Namespace, *, writes: bool = True) -> dict:
    """The keyword arguments every action takes (:class:`snapcat.rollout.Options`), from the
    flags :func:`_common` adds."""
    options = {
        "dry_run": args.dry_run,
        "current": _current(args),
        "kubeconfig": args.kubeconfig,
        "context": args.context,
    }
    if writes:
        if args.timeout <= 0 or args.poll <= 0:
            from snapcat.errors import UserError

            raise UserError("--timeout and --poll must be positive")
        options.update(timeout=args.timeout, poll=args.poll, wait=not args.no_wait)
    return options


def _report(result) -> int:
    from snapcat.rollout import format_status

    if result.dry_run:
        sys.stdout.write(result.yaml)
        return 0
    for message in result.messages:
        print(message)
    if result.status is not None:
        print(format_status(result.status))
    return 0


def _run_canary(args: argparse.Namespace) -> int:
    from snapcat import rollout

    if args.auto:
        return _run_auto_canary(args)
    result = rollout.canary(
        args.name,
        args.namespace,
        args.model_uri,
        args.percent,
        check_classes=args.check_classes,
        **_options(args),
    )
    return _report(result)


def _run_promote(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.promote(args.name, args.namespace, model_uri=args.model_uri, **_options(args))
    return _report(result)


def _run_rollback(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.rollback(args.name, args.namespace, **_options(args))
    return _report(result)


def _run_status(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.status(args.name, args.namespace, **_options(args, writes=False))
    if result.status is None:  # dry run without --current: only the request
        sys.stdout.write(result.yaml)
    elif args.yaml:
        sys.stdout.write(rollout.to_yaml(result.status))
    else:
        print(rollout.format_status(result.status))
    return 0


def _run_auto_canary(args: argparse.Namespace) -> int:
    from snapcat import rollout
    from snapcat.errors import UserError

    if not args.prometheus_url:
        raise UserError("--auto needs --prometheus-url")
    if args.dry_run or args.no_wait:
        raise UserError("--auto sends the canary and waits for it: drop --dry-run / --no-wait")
    analysis = rollout.AutoAnalysis(
        prometheus_url=args.prometheus_url,
        window=args.window,
        thresholds=_thresholds(args),
        timeout=args.analysis_timeout,
        interval=args.interval,
        undecided=args.undecided,
        canary_version=args.canary_version,
        stable_version=args.stable_version,
    )
    options = _options(args)
    outcome = rollout.auto_canary(
        args.name,
        args.namespace,
        args.model_uri,
        args.percent,
        analysis,
        check_classes=args.check_classes,
        kubeconfig=options["kubeconfig"],
        context=options["context"],
        timeout=args.timeout,
        poll=args.poll,
    )
    if outcome.decision is not None:
        print(outcome.decision.explain())
    _report(outcome.final or outcome.canary)
    return 0 if outcome.decision and outcome.decision.decision == "promote" else 3


def _run_analyze(args: argparse.Namespace) -> int:
    import json

    from snapcat import rollout

    if args.analysis_timeout < 0 or args.interval <= 0:
        from snapcat.errors import UserError

        raise UserError("--wait must be >= 0 and --interval positive")
    decision = rollout.analyze(
        rollout.Prometheus(args.prometheus_url),
        canary_version=args.canary_version,
        stable_version=args.stable_version,
        window=args.window,
        thresholds=_thresholds(args),
        wait_timeout=args.analysis_timeout,
        interval=args.interval,
    )
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2, sort_keys=True))
    else:
        print(decision.explain())
    return ANALYZE_EXIT[decision.decision]


#: Exit status of `rollout analyze` per decision, for scripts (2 is a usage/user error).
ANALYZE_EXIT = {"promote": 0, "rollback": 3, "wait": 4}
