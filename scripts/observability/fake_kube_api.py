#!/usr/bin/env python3
"""A small in-memory Kubernetes API server for the operator's live metrics check (stdlib only).

The project's one allowed mock sits at the Kubernetes API boundary, and it only does what a
real kube-apiserver does for the requests the operator makes (logged to --log, one line each):

  GET    list     resourceVersion in metadata, labelSelector, fieldSelector metadata.name /
                  metadata.namespace, `limit` + `continue` pages (410 Gone for a stale token)
  GET    ?watch=1 a chunked stream of JSON watch events (ADDED, MODIFIED, DELETED, BOOKMARK when
                  allowWatchBookmarks, ERROR 410 for a compacted resourceVersion), closed after
                  timeoutSeconds (or --max-watch-seconds, as an API server restart would)
  GET    one      200 or 404 with a metav1.Status
  POST   create   201; 409 AlreadyExists; 404 for a missing namespace; 403 in a terminating
                  namespace ("unable to create new content ... being terminated"); generateName
  PATCH           merge-patch, apply-patch (body as JSON, creates when absent; needs
                  fieldManager), strategic-merge (as a merge: the operator sends none), json-patch;
                  /status changes only status, the object itself never status; generation bumps
                  on spec changes; a no-op patch writes nothing; resourceVersion preconditions (409)
  DELETE          200 with the object; 404
Resources: pods (+status), services, configmaps, secrets, networkpolicies, events.k8s.io/v1
events, dracojobs (+status), namespaces (get/list). What a real cluster does beyond the API
server (scheduler, kubelet, garbage collector, admission webhooks, CRD schema/CEL validation)
is not done here; check.py plays the kubelet's part through this API (pod status patches).

  fake_kube_api.py --port 18080 --seed objects.json [--log requests.log]
"""

import argparse
import base64
import copy
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (api prefix, plural) -> (kind, apiVersion, namespaced, has a status subresource)
RESOURCES = {
    ("api/v1", "pods"): ("Pod", "v1", True, True),
    ("api/v1", "services"): ("Service", "v1", True, True),
    ("api/v1", "configmaps"): ("ConfigMap", "v1", True, False),
    ("api/v1", "secrets"): ("Secret", "v1", True, False),
    ("api/v1", "namespaces"): ("Namespace", "v1", False, True),
    ("apis/networking.k8s.io/v1", "networkpolicies"): ("NetworkPolicy", "networking.k8s.io/v1", True, False),
    ("apis/events.k8s.io/v1", "events"): ("Event", "events.k8s.io/v1", True, False),
    ("apis/draco.dev/v1alpha1", "dracojobs"): ("DracoJob", "draco.dev/v1alpha1", True, True),
}
# Kinds whose metadata.generation follows spec changes (CRDs and workloads; not pods).
GENERATION_KINDS = {"DracoJob"}


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_object(code, reason, message, name=None, kind=None):
    """A metav1.Status as the API server writes it."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if name is not None or kind is not None:
        body["details"] = {k: v for k, v in (("name", name), ("kind", kind)) if v is not None}
    return body


class ApiError(Exception):
    def __init__(self, code, reason, message, name=None, kind=None):
        super().__init__(message)
        self.code = code
        self.body = status_object(code, reason, message, name, kind)


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target, ops):
    """RFC 6902: add, replace, remove, test."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                del parent[index]
            elif kind == "test" and parent[index] != op["value"]:
                raise ApiError(422, "Invalid", f"test failed at {op['path']}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"replace: {op['path']} does not exist")
                parent[last] = op["value"]
            elif kind == "remove":
                if last not in parent:
                    raise ApiError(422, "Invalid", f"remove: {op['path']} does not exist")
                del parent[last]
            elif kind == "test" and parent.get(last) != op["value"]:
                raise ApiError(422, "Invalid", f"test failed at {op['path']}")
    return doc


def parse_label_selector(text):
    """`a=b,c!=d,e,!f,g in (x,y)` -> predicate on a labels dict."""
    terms, depth, cur = [], 0, ""
    for ch in text or "":
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur.strip())
    tests = []
    for t in terms:
        if " notin " in t or " in " in t:
            neg = " notin " in t
            key, values = t.split(" notin " if neg else " in ", 1)
            values = {v.strip() for v in values.strip()[1:-1].split(",")}
            tests.append(lambda l, k=key.strip(), vs=values, n=neg: (l.get(k) in vs) != n)
        elif "!=" in t:
            key, value = t.split("!=", 1)
            tests.append(lambda l, k=key.strip(), v=value.strip(): l.get(k) != v)
        elif "==" in t or "=" in t:
            key, value = t.split("==", 1) if "==" in t else t.split("=", 1)
            tests.append(lambda l, k=key.strip(), v=value.strip(): l.get(k) == v)
        elif t.startswith("!"):
            tests.append(lambda l, k=t[1:].strip(): k not in l)
        else:
            tests.append(lambda l, k=t: k in l)
    return lambda labels: all(test(labels or {}) for test in tests)


def parse_field_selector(text):
    tests = []
    for t in filter(None, (text or "").split(",")):
        neg = "!=" in t
        key, value = t.split("!=" if neg else ("==" if "==" in t else "="), 1)
        path = key.strip().split(".")

        def get(obj, path=path):
            for p in path:
                obj = obj.get(p) if isinstance(obj, dict) else None
            return obj

        tests.append(lambda o, g=get, v=value.strip(), n=neg: (g(o) == v) != n)
    return lambda obj: all(test(obj) for test in tests)


class Store:
    """Objects by (resource, namespace, name), a resourceVersion counter and the event log
    watches read from (kept whole: a short test never compacts)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 1
        self.objects = {}
        self.log = []  # (rv, type, resource, namespace, object, previous object or None)

    def _bump(self):
        self.rv += 1
        return str(self.rv)

    def _record(self, type_, resource, ns, obj, prev):
        self.log.append((int(obj["metadata"]["resourceVersion"]), type_, resource, ns, copy.deepcopy(obj), prev))
        self.cond.notify_all()

    def ensure_namespace(self, name, phase="Active"):
        with self.cond:
            key = (("api/v1", "namespaces"), "", name)
            obj = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339(),
                                "resourceVersion": self._bump()},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": phase}}
            if phase == "Terminating":
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            self.objects[key] = obj
            self._record("ADDED", key[0], "", obj, None)

    def namespace_phase(self, ns):
        obj = self.objects.get((("api/v1", "namespaces"), "", ns))
        return obj and obj["status"]["phase"]

    def create(self, resource, ns, body, dry_run=False):
        kind, api_version, namespaced, _ = RESOURCES[resource]
        plural = resource[1]
        with self.cond:
            meta = body.setdefault("metadata", {})
            if namespaced:
                if meta.get("namespace", ns) != ns:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                                   "the namespace sent on the request")
                phase = self.namespace_phase(ns)
                if phase is None:
                    raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces")
                if phase == "Terminating":
                    raise ApiError(403, "Forbidden", f'{plural} "{meta.get("name") or meta.get("generateName")}" '
                                   f"is forbidden: unable to create new content in namespace {ns} because it is "
                                   "being terminated", meta.get("name"), plural)
                meta["namespace"] = ns
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(422, "Invalid", f"{kind} in version \"{api_version}\" is invalid: "
                                   "metadata.name: Required value: name or generateName is required", kind=plural)
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            key = (resource, ns if namespaced else "", meta["name"])
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists', meta["name"], plural)
            body["apiVersion"], body["kind"] = api_version, kind
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            if kind in GENERATION_KINDS:
                meta["generation"] = 1
            if kind == "Pod":
                body.setdefault("status", {}).setdefault("phase", "Pending")
                body["status"].setdefault("qosClass", "BestEffort")
            if kind == "Service" and body.get("spec", {}).get("clusterIP") is None:
                body.setdefault("spec", {})["clusterIP"] = f"10.96.{self.rv % 250}.{(self.rv // 250) % 250 + 1}"
                body["spec"]["clusterIPs"] = [body["spec"]["clusterIP"]]
            if dry_run:
                return copy.deepcopy(body)
            meta["resourceVersion"] = self._bump()
            self.objects[key] = body
            self._record("ADDED", resource, key[1], body, None)
            return copy.deepcopy(body)

    def get(self, resource, ns, name):
        with self.cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource[1]} "{name}" not found', name, resource[1])
            return copy.deepcopy(obj)

    def list(self, resource, ns, labels, fields):
        with self.cond:
            items = [copy.deepcopy(o) for (r, n, _), o in sorted(self.objects.items())
                     if r == resource and (ns is None or n == ns)
                     and labels(o["metadata"].get("labels")) and fields(o)]
            return items, str(self.rv)

    def update(self, resource, ns, name, change, subresource=None, create_with=None):
        """`change(old) -> new`; writes (and bumps resourceVersion) only when something changed."""
        _, _, _, has_status = RESOURCES[resource]
        with self.cond:
            key = (resource, ns, name)
            old = self.objects.get(key)
            if old is None:
                if create_with is not None:
                    return self.create(resource, ns, create_with(name)), 201
                raise ApiError(404, "NotFound", f'{resource[1]} "{name}" not found', name, resource[1])
            new = change(copy.deepcopy(old))
            new_meta = new.setdefault("metadata", {})
            precondition = new_meta.get("resourceVersion")
            if precondition and precondition != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource[1]} "{name}": the '
                               "object has been modified; please apply your changes to the latest version and try "
                               "again", name, resource[1])
            if subresource == "status":
                new = dict(copy.deepcopy(old), status=new.get("status"))
                if new["status"] is None:
                    new.pop("status")
            elif has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            # Fields the server owns.
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "resourceVersion",
                          "deletionTimestamp"):
                if field in old["metadata"]:
                    new["metadata"][field] = old["metadata"][field]
                else:
                    new["metadata"].pop(field, None)
            new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
            if new == old:
                return copy.deepcopy(old), 200
            if old["kind"] in GENERATION_KINDS and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = self._bump()
            self.objects[key] = new
            self._record("MODIFIED", resource, ns, new, old)
            return copy.deepcopy(new), 200

    def delete(self, resource, ns, name):
        with self.cond:
            key = (resource, ns, name)
            old = self.objects.pop(key, None)
            if old is None:
                raise ApiError(404, "NotFound", f'{resource[1]} "{name}" not found', name, resource[1])
            old = copy.deepcopy(old)
            old["metadata"]["resourceVersion"] = self._bump()
            self._record("DELETED", resource, ns, old, None)
            return old

    def events_after(self, rv, resource, ns, labels, fields):
        """Watch events after `rv` for this resource, as (rv, type, object)."""
        out = []
        for erv, type_, r, n, obj, prev in self.log:
            if erv <= rv or r != resource or (ns is not None and n != ns):
                continue
            matches = labels(obj["metadata"].get("labels")) and fields(obj)
            matched = prev is not None and labels(prev["metadata"].get("labels")) and fields(prev)
            if matches:
                out.append((erv, "ADDED" if type_ == "MODIFIED" and prev is not None and not matched else type_, obj))
            elif matched:  # no longer selected: a watcher sees it go
                out.append((erv, "DELETED", obj))
        return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kube-rs keeps connections alive
    server_version = "fake-kube-apiserver/1"

    def log_message(self, fmt, *args):
        pass

    def _log(self, code, note=""):
        line = f"{time.strftime('%H:%M:%S')} {self.command} {self.path} -> {code}{note} [{self.headers.get('User-Agent', '')}]"
        with self.server.log_lock:
            self.server.requests.append((self.command, self.path, code, self.headers.get("User-Agent", "")))
            if self.server.log_file:
                self.server.log_file.write(line + "\n")
                self.server.log_file.flush()

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._log(code)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as e:
            # apply-patch+yaml in YAML proper; kube-rs sends JSON, which is YAML.
            raise ApiError(400, "BadRequest", f"the body is not JSON: {e}")

    def _route(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        parts = [p for p in url.path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            prefix, rest = "api/v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            prefix, rest = "/".join(parts[:3]), parts[3:]
        else:
            return None, None, None, None, query, parts
        ns = None
        if prefix == "api/v1" and rest[:1] == ["namespaces"] and len(rest) in (1, 2):
            rest = ["namespaces"] + rest[1:]  # the namespaces resource itself
        elif rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        if not rest or (prefix, rest[0]) not in RESOURCES:
            self.server.unrouted.append(f"{self.command} {self.path}")
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = (prefix, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status") or (sub == "status" and not RESOURCES[resource][3]):
            self.server.unrouted.append(f"{self.command} {self.path}")
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if RESOURCES[resource][2] is False:
            ns = ""
        elif name is not None and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return resource, ns, name, sub, query, parts

    def _handle(self, method):
        try:
            resource, ns, name, sub, query, parts = self._route()
            if resource is None:
                return self._discovery(parts)
            store = self.server.store
            if method == "GET" and name is None:
                labels = parse_label_selector(query.get("labelSelector"))
                fields = parse_field_selector(query.get("fieldSelector"))
                if query.get("watch") in ("1", "true"):
                    return self._watch(resource, ns, query, labels, fields)
                return self._list(resource, ns, query, labels, fields)
            if method == "GET":
                return self._send(200, store.get(resource, ns, name))
            if method == "POST" and name is None:
                return self._send(201, store.create(resource, ns or "", self._body(), "dryRun" in query))
            if method == "PATCH" and name is not None:
                return self._patch(resource, ns, name, sub, query)
            if method == "DELETE" and name is not None:
                self._body()
                return self._send(200, store.delete(resource, ns, name))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on this path")
        except ApiError as e:
            self._send(e.code, e.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _discovery(self, parts):
        if parts == ["version"]:
            return self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"})
        if parts in (["healthz"], ["readyz"], ["livez"]):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return self._log(200)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _list(self, resource, ns, query, labels, fields):
        kind, api_version, _, _ = RESOURCES[resource]
        items, rv = self.server.store.list(resource, ns, labels, fields)
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
                rv, last = token["rv"], token["after"]
            except (ValueError, KeyError):
                raise ApiError(400, "BadRequest", "continue key is not valid")
            # Pages of one list are all at its first page's resourceVersion; this store keeps
            # no old snapshots, so a list that changed meanwhile is "expired", as after compaction.
            if rv != str(self.server.store.rv):
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                               "list result. You can start a new list without the continue parameter.")
            start = next((i for i, o in enumerate(items) if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > tuple(last)), len(items))
        limit = int(query.get("limit") or 0)
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta = {"resourceVersion": rv}
        if limit > 0 and start + limit < len(items):
            last = page[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "after": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        self._send(200, {"apiVersion": api_version, "kind": kind + "List", "metadata": meta, "items": page})

    def _chunk(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, resource, ns, query, labels, fields):
        kind, api_version, _, _ = RESOURCES[resource]
        store = self.server.store
        timeout = float(query.get("timeoutSeconds") or 1800)
        if self.server.max_watch_seconds:
            timeout = min(timeout, self.server.max_watch_seconds)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        rv_text = query.get("resourceVersion", "")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._log(200, f" (watch, up to {timeout:.0f} s)")
        with store.cond:
            initial = query.get("sendInitialEvents") == "true"
            if rv_text in ("", "0") or initial:
                # No resourceVersion: synthetic ADDED events for what exists now, then changes.
                items, rv = store.list(resource, ns, labels, fields)
                pending = [(int(o["metadata"]["resourceVersion"]), "ADDED", o) for o in items]
                rv = int(rv)
            else:
                rv = int(rv_text)
                pending = []
                if rv < self.server.oldest_rv:
                    pending = None
        try:
            if pending is None:
                self._chunk({"type": "ERROR", "object": status_object(410, "Expired", f"too old resource version: {rv}")})
            else:
                for _, type_, obj in pending:
                    self._chunk({"type": type_, "object": obj})
                if initial:  # a streaming list: its end is a bookmark so annotated
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}}})
                ends = time.time() + timeout
                next_bookmark = time.time() + self.server.bookmark_seconds
                while time.time() < ends and not self.server.stopping:
                    with store.cond:
                        events = store.events_after(rv, resource, ns, labels, fields)
                        if not events:
                            store.cond.wait(timeout=min(1.0, max(0.0, ends - time.time())))
                            events = store.events_after(rv, resource, ns, labels, fields)
                        current = store.rv
                    for erv, type_, obj in events:
                        self._chunk({"type": type_, "object": obj})
                        rv = erv
                    if bookmarks and time.time() >= next_bookmark:
                        rv = max(rv, current)
                        self._chunk({"type": "BOOKMARK", "object": {
                            "kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(rv)}}})
                        next_bookmark = time.time() + self.server.bookmark_seconds
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _patch(self, resource, ns, name, sub, query):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._body()
        store = self.server.store
        create_with = None
        if ctype == "application/merge-patch+json" or ctype == "application/strategic-merge-patch+json":
            def change(old):
                return merge_patch(old, body)
        elif ctype == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager is required")

            def change(old):
                return merge_patch(old, body)

            if sub is None:
                def create_with(n):
                    return merge_patch({"metadata": {"name": n, "namespace": ns}}, body)
        elif ctype == "application/json-patch+json":
            def change(old):
                return json_patch(old, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: application/json-patch+json, application/merge-patch+json, "
                           f"application/apply-patch+yaml (got {ctype!r})")
        obj, code = store.update(resource, ns, name, change, sub, create_with)
        self._send(code, obj)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


class FakeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, log_path=None, max_watch_seconds=None, bookmark_seconds=5.0):
        super().__init__(("127.0.0.1", port), Handler)
        self.store = Store()
        self.store.ensure_namespace("default")
        self.oldest_rv = 0
        self.requests = []
        self.unrouted = []  # requests for resources this fake does not serve
        self.log_lock = threading.Lock()
        self.log_file = open(log_path, "w") if log_path else None
        self.max_watch_seconds = max_watch_seconds
        self.bookmark_seconds = bookmark_seconds
        self.stopping = False
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        with self.store.cond:
            self.store.cond.notify_all()
        self.shutdown()
        self.server_close()
        if self.log_file:
            self.log_file.close()

    def seed(self, objects):
        """Stores objects as they would be after `kubectl apply` (no admission, no validation)."""
        for obj in objects:
            if obj["kind"] == "Namespace":
                self.store.ensure_namespace(obj["metadata"]["name"], obj.get("status", {}).get("phase", "Active"))
                continue
            resource = next(r for r, (k, v, _, _) in RESOURCES.items() if k == obj["kind"] and v == obj["apiVersion"])
            ns = obj["metadata"].get("namespace", "default")
            if self.store.namespace_phase(ns) is None:
                self.store.ensure_namespace(ns)
            self.store.create(resource, ns, copy.deepcopy(obj))

    def kubeconfig(self, path, namespace="default"):
        """A kubeconfig for this server (JSON is YAML)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.server_address[1]}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        with open(path, "w") as f:
            json.dump(config, f, indent=1)


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flow(text):
    """A YAML flow collection or scalar: `{a: 1, b: [x, y]}`."""
    pos = 0

    def value():
        nonlocal pos
        while text[pos] == " ":
            pos += 1
        if text[pos] == "{":
            pos += 1
            out = {}
            while True:
                while text[pos] in " ,":
                    pos += 1
                if text[pos] == "}":
                    pos += 1
                    return out
                colon = text.index(":", pos)
                key = text[pos:colon].strip()
                pos = colon + 1
                out[key] = value()
        if text[pos] == "[":
            pos += 1
            out = []
            while True:
                while text[pos] in " ,":
                    pos += 1
                if text[pos] == "]":
                    pos += 1
                    return out
                out.append(value())
        start = pos
        while pos < len(text) and text[pos] not in ",}]":
            pos += 1
        return _scalar(text[start:pos])

    return value()


def load_yaml(text):
    """The YAML of this repository's manifests (block maps and lists, flow collections, plain and
    quoted scalars, comments; one document): enough without a YAML library."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.strip() and line.strip() != "---":
            lines.append((len(line) - len(line.lstrip()), line.strip()))

    def block(i, indent):
        if lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                # A list item: its content is indented two more than the dash.
                lines[i] = (indent + 2, lines[i][1][2:])
                if ":" in lines[i][1] and not lines[i][1].startswith(("{", "[")):
                    item, i = block(i, indent + 2)
                else:
                    item, i = _flow(lines[i][1]), i + 1
                out.append(item)
            return out, i
        out = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            rest = rest.strip()
            if rest:
                out[key.strip()] = _flow(rest)
                i += 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                out[key.strip()], i = block(i + 1, lines[i + 1][0])
            elif i + 1 < len(lines) and lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "):
                out[key.strip()], i = block(i + 1, indent)
            else:
                out[key.strip()] = None
                i += 1
        return out, i

    return block(0, lines[0][0])[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", help="JSON list of objects to store first")
    parser.add_argument("--log", help="write one line per request here")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    parser.add_argument("--max-watch-seconds", type=float)
    args = parser.parse_args()
    server = FakeApiServer(args.port, args.log, args.max_watch_seconds)
    if args.seed:
        with open(args.seed) as f:
            server.seed(json.load(f))
    if args.kubeconfig:
        server.kubeconfig(args.kubeconfig)
    print(f"fake kube API on http://127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
