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
            "for the result with --timeout; --dry-run prints the exact request as YAML and needs "
            "no cluster. See docs/deploy.md."
        ),
    )
    actions = p.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")

    c = actions.add_parser(
        "canary",
        help="send PERCENT%% of the traffic to a new model",
        description=(
            "Points the predictor's storageUri and the transformer's STORAGE_URI at the new model "
            "with canaryTrafficPercent: PERCENT. If the new revisions are not ready within "
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
        help="refuse a model whose class list differs from the current one (reads both models)",
    )
    _common(c, writes=True)
    c.set_defaults(handler=_run_canary)

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
        help="print the request as YAML instead of sending it; contacts no cluster",
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


def _connection(args: argparse.Namespace) -> dict:
    return {
        "dry_run": args.dry_run,
        "current": _current(args),
        "kubeconfig": args.kubeconfig,
        "context": args.context,
    }


def _waiting(args: argparse.Namespace) -> dict:
    if args.timeout <= 0 or args.poll <= 0:
        from snapcat.errors import UserError

        raise UserError("--timeout and --poll must be positive")
    return {"timeout": args.timeout, "poll": args.poll, "wait": not args.no_wait}


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

    result = rollout.canary(
        args.name,
        args.namespace,
        args.model_uri,
        args.percent,
        check_classes=args.check_classes,
        **_connection(args),
        **_waiting(args),
    )
    return _report(result)


def _run_promote(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.promote(
        args.name, args.namespace, model_uri=args.model_uri, **_connection(args), **_waiting(args)
    )
    return _report(result)


def _run_rollback(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.rollback(args.name, args.namespace, **_connection(args), **_waiting(args))
    return _report(result)


def _run_status(args: argparse.Namespace) -> int:
    from snapcat import rollout

    result = rollout.status(args.name, args.namespace, **_connection(args))
    if result.status is None:  # dry run without --current: only the request
        sys.stdout.write(result.yaml)
    elif args.yaml:
        sys.stdout.write(rollout.to_yaml(result.status))
    else:
        print(rollout.format_status(result.status))
    return 0
