"""``snapcat batch-pipeline``: compile, submit (or schedule) and run locally the batch prediction
pipeline, as ``snapcat pipeline`` does the training one (docs/batch.md)."""

from __future__ import annotations

import argparse

from snapcat.commands import add_kfp_submit_arguments


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image of the predict and merge steps (default: ours)")
    p.add_argument("--light-image", help="image of the split step (default: ours)")
    p.add_argument(
        "--storage-secret",
        default=argparse.SUPPRESS,
        help="Kubernetes secret with storage credentials ('' for none; default snapcat-storage)",
    )
    p.add_argument(
        "--parallelism",
        type=int,
        default=argparse.SUPPRESS,
        help="shards predicted at once (default 0: as many as the cluster schedules)",
    )


PARAM_HELP = (
    "pipeline parameter (repeatable): model_uri and input_uri are required; shard_count, "
    "batch_size, rank_disagreements"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch-pipeline", help="compile, submit or locally run the batch prediction KFP pipeline"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = actions.add_parser("compile", help="write the pipeline spec (YAML)")
    c.add_argument("--output", required=True, help="e.g. pipelines/batch_prediction_pipeline.yaml")
    _settings_flags(c)
    c.set_defaults(handler=run_compile)

    s = actions.add_parser("submit", help="submit a run (or a recurring run) to Kubeflow")
    add_kfp_submit_arguments(
        s,
        dry_run_help="compile, check and print what would be submitted; contacts nothing",
        schedule_example="0 0 4 * * *",
        param_help=PARAM_HELP,
    )
    _settings_flags(s)
    s.set_defaults(handler=run_submit)

    r = actions.add_parser("run-local", help="run the same pipeline on this machine (kfp.local)")
    r.add_argument("--workdir", required=True, help="where kfp.local keeps runs and artifacts")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    r.set_defaults(handler=run_local)


def settings_from_args(args: argparse.Namespace):
    from pipelines.batch_prediction_pipeline import BatchSettings

    given = vars(args)
    overrides = {name: given[name] for name in ("storage_secret", "parallelism") if name in given}
    if args.image:
        overrides["image"] = args.image
    if args.light_image:
        overrides["light_image"] = args.light_image
    return BatchSettings(**overrides)


def _params(args: argparse.Namespace, settings) -> tuple[dict, dict]:
    """(the given parameters, typed; the pipeline's parameters)."""
    from pipelines.batch_prediction_pipeline import pipeline_parameters
    from pipelines.runner import parse_params

    parameters = pipeline_parameters(settings)
    return parse_params(args.param, parameters=parameters), parameters


def run_compile(args: argparse.Namespace) -> int:
    from pipelines.batch_prediction_pipeline import compile_pipeline

    print(f"wrote {compile_pipeline(args.output, settings_from_args(args))}")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from pipelines import kfp_backend
    from pipelines.batch_prediction_pipeline import (
        LOCATION_PARAMETERS,
        PIPELINE_NAME,
        compile_pipeline,
    )
    from pipelines.runner import (
        describe_submission,
        refuse_local_paths,
        require_parameters,
        submit,
    )
    from snapcat.errors import UserError

    settings = settings_from_args(args)
    params, parameters = _params(args, settings)
    require_parameters(params, parameters)
    refuse_local_paths(params, LOCATION_PARAMETERS)
    package = Path(
        args.package or compile_pipeline(Path(tempfile.mkdtemp()) / "batch.yaml", settings)
    )
    if not package.is_file():
        raise UserError(f"no compiled pipeline at {package}")
    problems = kfp_backend.problems(package)
    if problems:
        raise UserError("a KFP backend would refuse this pipeline: " + "; ".join(problems))
    if args.dry_run:
        checks = "passed (KFP backend's rules, parameters)"
        print(describe_submission(package, params, args, parameters, checks=checks), end="")
        return 0
    run_id = submit(
        args.host,
        params,
        package=package,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        schedule=args.schedule,
        pipeline_name=PIPELINE_NAME,
    )
    print(f"{'recurring run' if args.schedule else 'run'} {run_id} submitted")
    return 0


def run_local(args: argparse.Namespace) -> int:
    from pipelines.batch_prediction_pipeline import BatchSettings
    from pipelines.batch_prediction_pipeline import run_local as run
    from pipelines.runner import require_parameters

    params, parameters = _params(args, BatchSettings())
    require_parameters(params, parameters)
    found = run(args.workdir, **params)
    print("local batch pipeline run finished:")
    print("\n".join(f"  {name:8} {path}" for name, path in found.items()))
    return 0
