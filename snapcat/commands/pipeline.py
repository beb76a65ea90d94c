"""``snapcat pipeline``: compile, submit (or schedule) and run locally the training pipeline."""

from __future__ import annotations

import argparse

from snapcat.commands import add_kfp_submit_arguments


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="training image the TensorFlow steps run in (default: ours)")
    p.add_argument(
        "--light-image",
        help="image of the fingerprint, select and deploy steps (Dockerfile.pipeline; default: ours)",
    )
    p.add_argument(
        "--workspace-size",
        help="size of the run's workspace volume, where training checkpoints survive a pod "
        "(default 20Gi)",
    )
    p.add_argument(
        "--workspace-storage-class",
        help="storage class of the workspace volume (default: the cluster's default class; KFP "
        "2.15-2.16 need one named)",
    )
    p.add_argument(
        "--workspace-access-mode",
        choices=("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"),
        default=argparse.SUPPRESS,
        help="ReadWriteMany (default): candidates train in parallel on any GPU nodes, one shared "
        "volume (needs an RWX storage class: NFS, CephFS, EFS, Filestore...); ReadWriteOnce: for "
        "clusters without RWX, candidates then train one after another",
    )
    p.add_argument(
        "--analysis-timeout",
        type=int,
        default=argparse.SUPPRESS,
        help="longest canary analysis (s) a run may ask for; the deploy step's deadline is "
        "derived from it (default 3600, also the run parameter's default)",
    )
    p.add_argument(
        "--gpu-type",
        default=argparse.SUPPRESS,
        help="accelerator resource name (default nvidia.com/gpu)",
    )
    p.add_argument(
        "--gpu-count", type=int, default=argparse.SUPPRESS, help="GPUs for train and evaluate"
    )
    p.add_argument(
        "--node-selector",
        action="append",
        metavar="KEY=VALUE",
        help="GPU node label (repeatable; replaces the default nvidia.com/gpu.present=true)",
    )
    p.add_argument(
        "--toleration",
        action="append",
        metavar="KEY[=VALUE][:EFFECT]",
        help="GPU node taint to tolerate (repeatable; replaces the default "
        "nvidia.com/gpu:NoSchedule)",
    )
    p.add_argument(
        "--storage-secret",
        default=argparse.SUPPRESS,
        help="Kubernetes secret with storage credentials ('' for none; default snapcat-storage)",
    )
    p.add_argument(
        "--train-retries",
        type=int,
        default=argparse.SUPPRESS,
        help="attempts after a failed train step (default 3)",
    )


def settings_from_args(args: argparse.Namespace):
    from pipelines.training_pipeline import ClusterSettings, Toleration
    from snapcat.errors import UserError

    # Options left out are absent from ``args`` (argparse.SUPPRESS): ClusterSettings's own
    # defaults apply, written there once (the help texts quote them for people).
    given = vars(args)
    overrides = {
        name: given[name]
        for name in (
            "gpu_type",
            "gpu_count",
            "storage_secret",
            "train_retries",
            "workspace_access_mode",
            "analysis_timeout",
        )
        if name in given
    }
    if args.workspace_storage_class:
        overrides["workspace_storage_class"] = args.workspace_storage_class
    if args.workspace_size:
        overrides["workspace_size"] = args.workspace_size
    if args.image:
        overrides["image"] = args.image
    if args.light_image:
        overrides["light_image"] = args.light_image
    if args.node_selector:
        pairs = [s.partition("=") for s in args.node_selector]
        if any(not sep or not k for k, sep, _ in pairs):
            raise UserError("--node-selector takes KEY=VALUE")
        overrides["node_selector"] = tuple((k, v) for k, _, v in pairs)
    if args.toleration:
        overrides["tolerations"] = tuple(Toleration.parse(t) for t in args.toleration)
    try:
        return ClusterSettings(**overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="compile, submit or locally run the KFP pipeline")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = actions.add_parser("compile", help="write the pipeline spec (YAML)")
    c.add_argument("--output", required=True, help="e.g. pipelines/training_pipeline.yaml")
    _cluster_flags(c)
    c.set_defaults(handler=run_compile)

    s = actions.add_parser("submit", help="submit a run (or a recurring run) to Kubeflow")
    add_kfp_submit_arguments(
        s,
        dry_run_help="compile, check the spec against what a KFP backend refuses (workspace, "
        "deadlines, parameters) and print what would be submitted; contacts nothing",
        schedule_example="0 0 3 * * 1",
        param_help="pipeline parameter (repeatable), e.g. input_uri=gs://bucket/photos",
    )
    s.add_argument(
        "--kfp-version",
        default="2.17",
        help="the backend's KFP version the spec is checked for (default 2.17; 2.15-2.16 need "
        "a named workspace storage class)",
    )
    s.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step afresh (by default prepare is reused when the input's fingerprint "
        "and settings match an earlier run)",
    )
    _cluster_flags(s)
    s.set_defaults(handler=run_submit)

    r = actions.add_parser("run-local", help="run the same pipeline on this machine (kfp.local)")
    r.add_argument("--input", required=True, help="labelled photos: folder, manifest or URI")
    r.add_argument("--workdir", required=True, help="where kfp.local keeps runs and artifacts")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: every step in this Python environment; docker: every step in its own "
        "image (--image, --light-image), as on the cluster (kfp.local.DockerRunner)",
    )
    _cluster_flags(r)
    r.set_defaults(handler=run_local)


def _params(args: argparse.Namespace, settings):
    from pipelines.runner import parse_params

    return parse_params(args.param, settings)


def run_compile(args: argparse.Namespace) -> int:
    from pipelines.runner import compile_pipeline

    path = compile_pipeline(args.output, settings_from_args(args))
    print(f"wrote {path}")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from pipelines.runner import (
        LOCATION_PARAMETERS,
        check_package,
        describe_submission,
        parse_params,
        pipeline_parameters,
        refuse_local_paths,
        require_parameters,
        submit,
    )
    from snapcat.errors import UserError

    settings = settings_from_args(args)
    parameters = pipeline_parameters(settings)
    params = parse_params(args.param, parameters=parameters)
    require_parameters(params, parameters)
    refuse_local_paths(params, LOCATION_PARAMETERS)
    try:
        major, minor = (int(x) for x in args.kfp_version.split(".")[:2])
    except ValueError as exc:
        raise UserError(f"--kfp-version {args.kfp_version!r}: expected MAJOR.MINOR") from exc
    package, problems = check_package(args.package, settings, kfp_version=(major, minor))
    if problems:
        raise UserError(
            f"a KFP {major}.{minor} backend would refuse this pipeline: " + "; ".join(problems)
        )
    if args.dry_run:
        checks = "passed (KFP Argo compiler workspace rules, deploy deadline, parameters)"
        caching = "off" if args.no_cache else "as compiled (prepare only)"
        print(describe_submission(package, params, args, parameters, checks=checks,
                                  caching=caching), end="")  # fmt: skip
        return 0
    run_id = _submit(submit, args, params, settings, package)
    print(f"{'recurring run' if args.schedule else 'run'} {run_id} submitted")
    return 0


def _submit(submit, args, params, settings, package) -> str:
    return submit(
        args.host,
        params,
        package=package,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        schedule=args.schedule,
        settings=settings,
        enable_caching=False if args.no_cache else None,
    )


def run_local(args: argparse.Namespace) -> int:
    from pipelines.runner import describe_result
    from pipelines.runner import run_local as run

    settings = settings_from_args(args)
    artifacts = run(args.input, args.workdir, _params(args, settings), settings, runner=args.runner)
    print(describe_result(artifacts))
    return 0
