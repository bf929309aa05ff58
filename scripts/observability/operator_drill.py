"""The operator's part of the live check: the real `draco operator` binary against the fake
Kubernetes API server of fake_kube_api.py, on 127.0.0.1, while Prometheus scrapes its /metrics.

The store starts with three DracoJobs, so that every path the operator dashboard shows runs:
  fashion-mnist   manifests/examples/fashion-mnist-k8s.yaml as `kubectl apply` stores it: the
                  operator creates its objects and pods (Created); the kubelet (played here,
                  through the API, as a real kubelet reports pod status) runs the pods, then
                  OOM-kills a worker (exit 137: Restarting, the operator replaces the pod), then
                  the PS exits 0 (Succeeded; cleanPodPolicy Running removes the workers);
  invalid-spec    the same with byzantineTolerance 2 > (r - 1) / 2, as stored before the CRD had
                  its CEL rule (the operator's own validation is the defense in depth): InvalidSpec,
                  Failed, and a Warning event;
  stranded        a valid job in a namespace that is being deleted: every create is refused
                  (403), so its reconciles fail and are retried (reconciles_total{result="error"}).
Phase Running needs decoded steps from the PS's /status, which the operator reads at
`<job>-ps.<namespace>.svc:9090` (cluster DNS, not configurable): unreachable here, so no job is
ever Running (the operator copes: ps_status::fetch gives None).
"""

import copy
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import fake_kube_api

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "manifests", "examples", "fashion-mnist-k8s.yaml")
NAMESPACE = "draco-obs"
GONE_NAMESPACE = "draco-obs-deleted"
LABEL_JOB = "draco.dev/job-name"


def seed_objects():
    job = fake_kube_api.load_yaml(open(EXAMPLE).read())
    job["metadata"]["namespace"] = NAMESPACE
    invalid = copy.deepcopy(job)
    invalid["metadata"]["name"] = "invalid-spec"
    invalid["spec"]["byzantineTolerance"] = 2
    stranded = copy.deepcopy(job)
    stranded["metadata"].update(name="stranded", namespace=GONE_NAMESPACE)
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in (NAMESPACE, GONE_NAMESPACE)] + [
        job, invalid, stranded]


class OperatorDrill:
    def __init__(self, workdir, draco, api_port, metrics_port):
        self.workdir = workdir
        self.metrics_port = metrics_port
        self.api = fake_kube_api.FakeApiServer(api_port, os.path.join(workdir, "kube-api-requests.log"),
                                               max_watch_seconds=30, bookmark_seconds=5)
        self.api.seed(seed_objects())
        # The namespace's deletion began after its job was stored.
        with self.api.store.cond:
            ns = self.api.store.objects[(("api/v1", "namespaces"), "", GONE_NAMESPACE)]
            ns["status"]["phase"] = "Terminating"
            ns["metadata"]["deletionTimestamp"] = fake_kube_api.now_rfc3339()
        self.api.start()
        self.base = f"http://127.0.0.1:{api_port}"
        kubeconfig = os.path.join(workdir, "kubeconfig")
        self.api.kubeconfig(kubeconfig)
        self.log = open(os.path.join(workdir, "operator.log"), "w")
        env = dict(os.environ, KUBECONFIG=kubeconfig, RUST_LOG="info,kube=info", POD_NAME="draco-operator-obs-check")
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [draco, "operator", "--metrics-addr", f"127.0.0.1:{metrics_port}", "--image", "draco:obs-check"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.stopping = threading.Event()
        self.story = []  # what the kubelet did, for the output
        self.kubelet = threading.Thread(target=self._kubelet, daemon=True)
        self.kubelet.start()

    # ------------------------------------------------------------------ the kubelet's part

    def _request(self, method, path, body=None, ctype="application/merge-patch+json"):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def _pod_status(self, pod, phase, exit_code=None, reason=None):
        ts = fake_kube_api.now_rfc3339()
        if phase == "Running":
            state = {"running": {"startedAt": ts}}
        else:
            state = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": ts, "finishedAt": ts}}
        ready = "True" if phase == "Running" else "False"
        status = {"status": {
            "phase": phase, "hostIP": "10.0.0.2", "podIP": "10.244.0.9", "startTime": ts,
            "conditions": [{"type": t, "status": ready if t in ("Ready", "ContainersReady") else "True",
                            "lastTransitionTime": ts} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": "draco", "image": "draco:obs-check", "imageID": "", "ready": ready == "True",
                                   "restartCount": 0, "started": phase == "Running", "state": state}],
        }}
        m = pod["metadata"]
        self._request("PATCH", f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status", status)

    def _kubelet(self):
        """Runs the pods the operator creates (reports them Running and Ready), then, once all of
        fashion-mnist's pods ran a few seconds, OOM-kills worker 1, and after its replacement ran,
        lets the PS succeed."""
        stage, since = "run", None
        job = "fashion-mnist"
        while not self.stopping.wait(0.5):
            try:
                pods = self._request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={LABEL_JOB}%3D{job}")["items"]
                for pod in pods:
                    if pod.get("status", {}).get("phase", "Pending") == "Pending" and not pod["metadata"].get("deletionTimestamp"):
                        self._pod_status(pod, "Running")
                running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
                if len(pods) == 7 and len(running) == 7:
                    since = since or time.time()
                else:
                    since = None
                if since and time.time() - since >= 4:
                    by_name = {p["metadata"]["name"]: p for p in pods}
                    if stage == "run":
                        self._pod_status(by_name[f"{job}-worker-1"], "Failed", 137, "OOMKilled")
                        self.story.append("OOM-killed worker 1 (exit 137)")
                        stage, since = "restarted", None
                    elif stage == "restarted":
                        self._pod_status(by_name[f"{job}-ps"], "Succeeded", 0, "Completed")
                        self.story.append("the PS exited 0")
                        stage = "done"
            except (OSError, ValueError, KeyError) as e:
                self.story.append(f"kubelet: {e}")
                time.sleep(1)

    # ------------------------------------------------------------------ results

    def job_states(self):
        out = {}
        with self.api.store.cond:
            for (resource, ns, name), obj in self.api.store.objects.items():
                if resource[1] == "dracojobs":
                    out[f"{ns}/{name}"] = (obj.get("status") or {}).get("state")
        return out

    def wait_for(self, want, timeout):
        """Waits until job_states() has every (job, state) of `want`; returns the states."""
        deadline = time.time() + timeout
        while True:
            states = self.job_states()
            if all(states.get(j) == s for j, s in want.items()) or time.time() > deadline:
                return states
            time.sleep(0.5)

    def scrape(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def request_summary(self):
        """(method, path pattern, code) -> count: what the operator asked the API server (its
        query parameters by name)."""
        counts = {}
        with self.api.log_lock:
            requests = list(self.api.requests)
        for method, path, code, agent in requests:
            if agent.startswith("Python-urllib"):
                continue  # the kubelet's part, played by this file
            path, _, query = path.partition("?")
            params = sorted(k for k, _ in (p.split("=", 1) if "=" in p else (p, "") for p in query.split("&") if p))
            m = re.fullmatch(r"(/api/v1|/apis/[^/]+/[^/]+)(/namespaces/[^/]+)?/([a-z]+)(/[^/]+)?(/status)?", path)
            if m:
                path = (m.group(1) + ("/namespaces/{ns}" if m.group(2) else "") + "/" + m.group(3)
                        + ("/{name}" if m.group(4) else "") + (m.group(5) or ""))
            key = (method, path + ("?" + "&".join(params) if params else ""), code)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def events(self):
        with self.api.store.cond:
            return [o for (r, _, _), o in self.api.store.objects.items() if r[1] == "events"]

    def stop(self):
        self.stopping.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.api.stop()
