"""A fake Kubernetes API server holding one InferenceService, and the live objects it serves:
shared by the rollout, canary-analysis and evidence tests."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from snapcat import rollout

NAME = "listing-category"
NS = "snapcat-test"
PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{NAME}"
OLD_URI = "gs://snapcat-models/listing-category-v1"
NEW_URI = "gs://snapcat-models/listing-category-v2"
TOKEN = "fake-token-for-tests"
MAX_REQUESTS = 400  # the fake server refuses more: a runaway poll loop fails instead of hanging


def live_object(uri: str = OLD_URI, **status_overrides) -> dict:
    """A deployed InferenceService as the API server returns it: rendered, plus server fields."""
    obj = rollout.render_inferenceservice(NAME, NS, uri)
    obj["metadata"].update(
        {"resourceVersion": "7", "generation": 1, "uid": "u-1", "managedFields": [{"x": 1}]}
    )
    status = {
        "observedGeneration": 1,
        "deploymentMode": "Knative",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            c: {
                "latestCreatedRevision": f"{NAME}-{c}-00001",
                "latestReadyRevision": f"{NAME}-{c}-00001",
                "latestRolledoutRevision": f"{NAME}-{c}-00001",
                "traffic": [
                    {"revisionName": f"{NAME}-{c}-00001", "percent": 100, "latestRevision": True}
                ],
            }
            for c in ("predictor", "transformer")
        },
    }
    status.update(status_overrides)
    obj["status"] = status
    return obj


# ------------------------------------------------------------------------------ fake API server
def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKServe:
    """The InferenceService endpoint of a Kubernetes API server, with KServe's controller played
    along the lines of its Knative reconciler: a change of a component's template makes a new
    revision; canaryTrafficPercent P gives the latest ready revision P% and the last rolled-out one
    the rest; a revision that gets 100% becomes the rolled-out one. The first ``settle`` GETs after
    a write still show the old status (the controller has not caught up)."""

    def __init__(self, obj: dict, *, never_ready=False, failed_load=False, settle=1):
        self.obj = copy.deepcopy(obj)
        self.obj.pop("status", None)
        self.obj["metadata"].update({"resourceVersion": "1", "generation": 1, "uid": "uid-1"})
        self.never_ready = never_ready or failed_load
        self.failed_load = failed_load
        self.settle = settle
        self.pending = 0
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.revisions: dict[str, list[dict]] = {c: [] for c in self.components()}
        self.rolled: dict[str, str | None] = {c: None for c in self.components()}
        self.previous: dict[str, str | None] = {c: None for c in self.components()}
        self.status: dict = {}
        self.reconcile(initial=True)

    def components(self):
        return [c for c in ("predictor", "transformer") if self.obj["spec"].get(c)]

    def template(self, component: str) -> str:
        spec = copy.deepcopy(self.obj["spec"][component])
        spec.pop("canaryTrafficPercent", None)
        return json.dumps(spec, sort_keys=True)

    def reconcile(self, initial=False):
        components, all_ready = {}, True
        for c in self.components():
            revisions = self.revisions[c]
            if not revisions or revisions[-1]["template"] != self.template(c):
                revisions.append(
                    {
                        "name": f"{NAME}-{c}-{len(revisions) + 1:05d}",
                        "template": self.template(c),
                        "ready": initial or not self.never_ready,
                    }
                )
            created = revisions[-1]
            latest_ready = [r for r in revisions if r["ready"]][-1]["name"]
            all_ready &= created["ready"]
            percent = self.obj["spec"][c].get("canaryTrafficPercent")
            url = f"http://{{}}{NAME}-{c}.{NS}.example.com"
            if percent is not None and self.rolled[c]:
                traffic = [
                    {
                        "revisionName": latest_ready,
                        "percent": percent,
                        "latestRevision": True,
                        "tag": "latest",
                        "url": url.format("latest-"),
                    }
                ]
                if percent < 100:
                    traffic.append(
                        {
                            "revisionName": self.rolled[c],
                            "percent": 100 - percent,
                            "latestRevision": False,
                            "tag": "prev",
                            "url": url.format("prev-"),
                        }
                    )
            else:
                traffic = [{"revisionName": latest_ready, "percent": 100, "latestRevision": True}]
            full = [t["revisionName"] for t in traffic if t["percent"] == 100]
            if full and full[0] != self.rolled[c]:
                self.previous[c], self.rolled[c] = self.rolled[c], full[0]
            components[c] = {
                "latestCreatedRevision": created["name"],
                "latestReadyRevision": latest_ready,
                "latestRolledoutRevision": self.rolled[c],
                "previousRolledoutRevision": self.previous[c],
                "url": url.format(""),
                "traffic": traffic,
            }
        ready = "True" if all_ready else "False"
        conditions = [{"type": "Ready", "status": ready}]
        if not all_ready:
            conditions[0].update(reason="RevisionMissing", message="revision failed to start")
        self.status = {
            "observedGeneration": self.obj["metadata"]["generation"],
            "deploymentMode": "Knative",
            "url": f"http://{NAME}.{NS}.example.com",
            "conditions": conditions,
            "components": components,
        }
        if self.failed_load and not all_ready:
            self.status["modelStatus"] = {
                "transitionStatus": "BlockedByFailedLoad",
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no SavedModel"},
            }

    def current(self) -> dict:
        return {**copy.deepcopy(self.obj), "status": copy.deepcopy(self.status)}

    def write(self, new_obj: dict):
        old_spec = self.obj["spec"]
        meta = self.obj["metadata"]
        new_obj.pop("status", None)
        new_obj["metadata"] = {**new_obj.get("metadata", {}), **{k: meta[k] for k in ("uid",)}}
        new_obj["metadata"]["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        new_obj["metadata"]["generation"] = meta["generation"] + (new_obj["spec"] != old_spec)
        self.obj = new_obj
        self.pending = self.settle

    def handle(self, method: str, path: str, headers, body: dict | None) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "content_type": headers.get("Content-Type"),
                    "authorization": headers.get("Authorization"),
                    "body": body,
                }
            )
            if len(self.requests) > MAX_REQUESTS:
                return 500, {"kind": "Status", "message": "too many requests"}
            if path != PATH:
                return 404, {"kind": "Status", "code": 404, "message": f"{path} not found"}
            if method == "GET":
                if self.pending:
                    self.pending -= 1
                else:
                    self.reconcile()
                return 200, self.current()
            expected_version = (body.get("metadata") or {}).get("resourceVersion")
            if expected_version and expected_version != self.obj["metadata"]["resourceVersion"]:
                return 409, {
                    "kind": "Status",
                    "code": 409,
                    "message": "the object has been modified",
                }
            status = copy.deepcopy(self.status)
            if method == "PATCH":
                assert headers.get("Content-Type") == "application/merge-patch+json"
                self.write(merge_patch(self.obj, body))
            elif method == "PUT":
                self.write(copy.deepcopy(body))
            else:
                return 405, {"kind": "Status", "message": method}
            return 200, {**copy.deepcopy(self.obj), "status": status}

    def writes(self) -> list[tuple[str, dict]]:
        return [(r["method"], r["body"]) for r in self.requests if r["method"] != "GET"]

    def calls(self) -> list[str]:
        return [r["method"] for r in self.requests]


@pytest.fixture
def fake_api(tmp_path):
    """Starts a fake API server for a FakeKServe; yields (make, kubeconfig path)."""
    servers = []

    def make(fake: FakeKServe):
        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, payload = fake.handle(self.command, self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        kubeconfig = tmp_path / f"kubeconfig-{uuid.uuid4().hex[:6]}"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "fake",
                            "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                        }
                    ],
                    "users": [{"name": "fake", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return str(kubeconfig)

    yield make
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


FAST = {"poll": 0.01, "timeout": 10}
