"""The Kubernetes calls a rollout makes, with API errors turned into messages that say what to do.

It goes through the KServe SDK's ``KServeClient`` (kubeconfig or in-cluster config): ``get`` for
reads, and its ``CustomObjectsApi`` for the PATCH/PUT with plain dict bodies, so a dry run prints
exactly the body that is sent (``KServeClient.patch``/``replace`` take SDK model objects, whose
serialization drops explicit nulls and any field the SDK does not know). Where the SDK is not
installed (the pipeline image) the kubernetes client does the same calls with the same
configuration.
"""

from __future__ import annotations

import json
import os
from typing import Any

from snapcat.rollout.isvc import GROUP, PLURAL, VERSION, RolloutError


class Cluster:
    """The Kubernetes calls a rollout makes, through the KServe SDK's ``KServeClient``."""

    def __init__(self, kserve_client: Any):
        self.kserve = kserve_client

    @classmethod
    def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, *, offline: str = ""
    ) -> Cluster:
        """kubeconfig (``kubeconfig``, else $KUBECONFIG or ~/.kube/config) outside a cluster,
        the pod's service account inside one. ``offline``: how the calling command can do without
        a cluster, for its error message (each command has its own way, or none)."""
        from kubernetes.config import ConfigException

        try:
            try:
                from kserve.api.kserve_client import KServeClient
            except ImportError:  # e.g. the pipeline image, which has only the kubernetes client
                return cls(_KubernetesOnly(kubeconfig, context))
            return cls(KServeClient(config_file=kubeconfig, context=context))
        except (ConfigException, FileNotFoundError) as exc:
            raise RolloutError(
                f"no usable Kubernetes configuration ({exc}): pass --kubeconfig/--context, set "
                "KUBECONFIG, or run inside a cluster" + (f"; {offline}" if offline else "")
            ) from exc

    def get(self, name: str, namespace: str) -> dict:
        try:
            return self.kserve.get(name, namespace=namespace)
        except RuntimeError as exc:  # KServeClient wraps the ApiException in a RuntimeError
            raise self._error("read", name, namespace, exc.__context__ or exc) from exc
        except Exception as exc:
            raise self._error("read", name, namespace, exc) from exc

    def patch(self, name: str, namespace: str, body: dict) -> dict:
        try:  # the generated client sends custom-object patches as application/merge-patch+json
            return self.kserve.api_instance.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except Exception as exc:
            raise self._error("patch", name, namespace, exc) from exc

    def replace(self, name: str, namespace: str, body: dict) -> dict:
        try:
            return self.kserve.api_instance.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except Exception as exc:
            raise self._error("replace", name, namespace, exc) from exc

    @staticmethod
    def _error(verb: str, name: str, namespace: str, exc: BaseException) -> RolloutError:
        ref = f"InferenceService {namespace}/{name}"
        status = getattr(exc, "status", None)
        detail = _api_message(exc)
        if status == 404:
            return RolloutError(
                f"{ref} does not exist: deploy it first (kubectl apply -k manifests/overlays/<env>)"
            )
        if status in (401, 403):
            return RolloutError(
                f"not allowed to {verb} {ref} ({detail}); the Role in manifests/base/rbac.yaml "
                "grants get/create/patch/update on inferenceservices"
            )
        if status == 409:
            return RolloutError(f"{ref} changed while this {verb} was prepared; run it again")
        if status in (400, 422):
            return RolloutError(f"the API server rejected the {verb} of {ref}: {detail}")
        if status is not None:
            return RolloutError(f"{verb} of {ref} failed with HTTP {status}: {detail}")
        return RolloutError(f"cannot {verb} {ref}: {detail}")


class _KubernetesOnly:
    """The two parts of ``KServeClient`` a rollout uses, for where the KServe SDK is not installed:
    the same configuration choice (kubeconfig unless running in a pod) and the same
    ``CustomObjectsApi`` calls."""

    def __init__(self, kubeconfig: str | None, context: str | None):
        from kubernetes import client, config

        if kubeconfig or not os.path.isdir("/var/run/secrets/kubernetes.io/"):
            config.load_kube_config(config_file=kubeconfig, context=context)
        else:
            config.load_incluster_config()
        self.api_instance = client.CustomObjectsApi()

    def get(self, name: str, namespace: str) -> dict:
        return self.api_instance.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )


def _api_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(exc, "reason", None) or exc).strip().splitlines()[0][:300]
