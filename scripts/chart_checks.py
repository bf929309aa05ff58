"""Checks on the chart's rendered output, run by scripts/test-chart.sh (with the .tools venv
python, which has PyYAML and kubernetes-validate).

  chart_checks.py validate FILE          every document validates against Kubernetes 1.33
                                         (strict), or is a known custom resource whose shape is
                                         checked here (no schema for it in kubernetes-validate)
  chart_checks.py rbac FILE MODE [NS]    MODE cluster|namespaced: the RBAC is exactly the
                                         operator's access, no wildcard, no read on Secrets
  chart_checks.py operator FILE MODE [NS] the operator Deployment's hardening and arguments
  chart_checks.py examples CRD FILE...   every DracoJob in FILEs validates against the CRD schema

Each prints what it checked and exits 1 with the reasons on failure.
"""

import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"

# The operator's API access, as agreed with the operator's code (issue 4): nothing more.
EXPECTED_RULES = {
    # The controller lists and watches jobs; delete: runPolicy.ttlSecondsAfterFinished
    # (operator/src/reconcile.rs, Action::DeleteJob).
    ("draco.dev", "dracojobs"): {"list", "watch", "delete"},
    # Status is written with a JSON merge patch, only when it changed.
    ("draco.dev", "dracojobs/status"): {"patch"},
    # Children carry blockOwnerDeletion owner references (OwnerReferencesPermissionEnforcement).
    ("draco.dev", "dracojobs/finalizers"): {"update"},
    # Pods are watched (Controller::owns), created and deleted (restarts, clean-up, suspend).
    ("", "pods"): {"list", "watch", "create", "delete"},
    # Read, then created when missing; deletion is left to the garbage collector.
    ("", "services"): {"get", "create"},
    # The ConfigMap is also patched when an editable field (stragglerTimeoutSeconds) changes.
    ("", "configmaps"): {"get", "create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create"},
    # Created only: the name holds the job's UID, so an existing one is the job's own. Never read
    # (a patch or update returns the object, so those would be reads too).
    ("", "secrets"): {"create"},
    # kube-runtime's event Recorder writes events.k8s.io/v1 events.
    ("events.k8s.io", "events"): {"create", "patch"},
}
SECRET_READ_VERBS = {"get", "list", "watch", "patch", "update"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(problems):
    for p in problems:
        print(f"  FAIL: {p}", file=sys.stderr)
    sys.exit(1)


def label(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- custom resources kubernetes-validate has no schema for ---------------------------------

def _keys(obj, allowed, where, problems):
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a mapping, got {type(obj).__name__}")
        return False
    extra = set(obj) - set(allowed)
    if extra:
        problems.append(f"{where}: unknown fields {sorted(extra)}")
    return True


def _str(v, where, problems):
    if not isinstance(v, str) or not v:
        problems.append(f"{where}: expected a non-empty string, got {v!r}")


def _duration(v, where, problems):
    import re
    if not isinstance(v, str) or not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", v):
        problems.append(f"{where}: not a Prometheus duration: {v!r}")


def _selector(sel, where, problems):
    if not _keys(sel, {"matchLabels", "matchExpressions"}, where, problems):
        return
    if not sel:
        problems.append(f"{where}: empty selector would select everything")
    for k, v in (sel.get("matchLabels") or {}).items():
        _str(v, f"{where}.matchLabels.{k}", problems)
    for i, e in enumerate(sel.get("matchExpressions") or []):
        w = f"{where}.matchExpressions[{i}]"
        if _keys(e, {"key", "operator", "values"}, w, problems):
            if e.get("operator") not in {"In", "NotIn", "Exists", "DoesNotExist"}:
                problems.append(f"{w}.operator: {e.get('operator')!r}")
            if e.get("operator") in {"In", "NotIn"} and not e.get("values"):
                problems.append(f"{w}: {e['operator']} needs values")


def _ns_selector(ns, where, problems):
    if _keys(ns, {"any", "matchNames"}, where, problems):
        if not ns.get("any") and not ns.get("matchNames"):
            problems.append(f"{where}: neither any nor matchNames")


RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
                  "action"}


def _endpoint(ep, where, problems, allowed):
    if _keys(ep, allowed, where, problems):
        _str(ep.get("port"), f"{where}.port", problems)
        if not str(ep.get("path", "")).startswith("/"):
            problems.append(f"{where}.path: {ep.get('path')!r}")
        for d in ("interval", "scrapeTimeout"):
            if d in ep:
                _duration(ep[d], f"{where}.{d}", problems)
        for i, r in enumerate(ep.get("relabelings") or []):
            rw = f"{where}.relabelings[{i}]"
            if _keys(r, RELABEL_FIELDS, rw, problems):
                if not all(isinstance(x, str) and x for x in r.get("sourceLabels") or []):
                    problems.append(f"{rw}.sourceLabels: {r.get('sourceLabels')!r}")
                if r.get("action", "replace") == "replace":
                    _str(r.get("targetLabel"), f"{rw}.targetLabel", problems)


ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                   "metricRelabelings", "honorLabels"}


def check_servicemonitor(doc, problems):
    spec = doc.get("spec")
    w = f"{label(doc)} spec"
    if not _keys(spec, {"selector", "namespaceSelector", "endpoints", "jobLabel",
                        "targetLabels", "podTargetLabels"}, w, problems):
        return
    _selector(spec.get("selector"), f"{w}.selector", problems)
    if "namespaceSelector" in spec:
        _ns_selector(spec["namespaceSelector"], f"{w}.namespaceSelector", problems)
    eps = spec.get("endpoints")
    if not isinstance(eps, list) or not eps:
        problems.append(f"{w}.endpoints: required, non-empty list")
    for i, ep in enumerate(eps or []):
        _endpoint(ep, f"{w}.endpoints[{i}]", problems, ENDPOINT_FIELDS)


def check_podmonitor(doc, problems):
    spec = doc.get("spec")
    w = f"{label(doc)} spec"
    if not _keys(spec, {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel",
                        "podTargetLabels"}, w, problems):
        return
    _selector(spec.get("selector"), f"{w}.selector", problems)
    if "namespaceSelector" in spec:
        _ns_selector(spec["namespaceSelector"], f"{w}.namespaceSelector", problems)
    eps = spec.get("podMetricsEndpoints")
    if not isinstance(eps, list) or not eps:
        problems.append(f"{w}.podMetricsEndpoints: required, non-empty list")
    for i, ep in enumerate(eps or []):
        _endpoint(ep, f"{w}.podMetricsEndpoints[{i}]", problems, ENDPOINT_FIELDS)
    for i, t in enumerate(spec.get("podTargetLabels") or []):
        _str(t, f"{w}.podTargetLabels[{i}]", problems)
    # The dashboards and alerts select on these target labels (docs/metrics.md).
    for i, ep in enumerate(eps or []):
        targets = {r.get("targetLabel") for r in ep.get("relabelings") or []}
        if not {"draco_job", "draco_role", "worker"} <= targets:
            problems.append(f"{w}.podMetricsEndpoints[{i}]: relabelings give {sorted(targets)}, "
                            "the dashboards need draco_job, draco_role and worker")


def check_prometheusrule(doc, problems):
    spec = doc.get("spec")
    w = f"{label(doc)} spec"
    if not _keys(spec, {"groups"}, w, problems):
        return
    groups = spec.get("groups")
    if not isinstance(groups, list) or not groups:
        problems.append(f"{w}.groups: required, non-empty list")
        return
    names = set()
    for gi, g in enumerate(groups):
        gw = f"{w}.groups[{gi}]"
        if not _keys(g, {"name", "interval", "rules", "limit", "labels", "query_offset"},
                     gw, problems):
            continue
        _str(g.get("name"), f"{gw}.name", problems)
        if g.get("name") in names:
            problems.append(f"{gw}.name: duplicate group {g.get('name')!r}")
        names.add(g.get("name"))
        if "interval" in g:
            _duration(g["interval"], f"{gw}.interval", problems)
        for ri, r in enumerate(g.get("rules") or []):
            rw = f"{gw}.rules[{ri}]"
            if not _keys(r, {"alert", "record", "expr", "for", "keep_firing_for", "labels",
                             "annotations"}, rw, problems):
                continue
            if ("alert" in r) == ("record" in r):
                problems.append(f"{rw}: exactly one of alert/record")
            if not isinstance(r.get("expr"), (str, int)) or r.get("expr") == "":
                problems.append(f"{rw}.expr: required")
            if "record" in r and ("for" in r or "annotations" in r):
                problems.append(f"{rw}: a recording rule has no for/annotations")
            for d in ("for", "keep_firing_for"):
                if d in r:
                    _duration(r[d], f"{rw}.{d}", problems)
            for m in ("labels", "annotations"):
                for k, v in (r.get(m) or {}).items():
                    if not isinstance(v, str):
                        problems.append(f"{rw}.{m}.{k}: must be a string, got {v!r}")


CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_podmonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
}


def cmd_validate(path):
    docs = load(path)
    problems, validated, custom = [], [], []
    if not docs:
        fail([f"{path}: no documents"])
    for doc in docs:
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            problems.append(f"{label(doc)}: no metadata.name")
        # Resource names the chart makes must stay DNS labels (CRDs are named by group).
        if doc.get("kind") != "CustomResourceDefinition" and len(meta.get("name", "")) > 63:
            problems.append(f"{label(doc)}: name longer than 63 characters")
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            validated.append(label(doc))
        except kubernetes_validate.SchemaNotFoundError:
            check = CUSTOM_KINDS.get((doc.get("apiVersion"), doc.get("kind")))
            if check is None:
                problems.append(f"{label(doc)} ({doc.get('apiVersion')}): no Kubernetes "
                                f"{K8S_VERSION} schema and not a known custom resource")
                continue
            before = len(problems)
            for k in set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
                problems.append(f"{label(doc)}: unknown top-level field {k}")
            check(doc, problems)
            if len(problems) == before:
                custom.append(label(doc))
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{label(doc)}: {e.message} at {'.'.join(map(str, e.path))}")
    print(f"  {len(validated)} documents valid for Kubernetes {K8S_VERSION} (strict)"
          f"{': ' + ', '.join(validated) if validated else ''}")
    if custom:
        print(f"  {len(custom)} custom resources shape-checked (kubernetes-validate has no "
              f"schema for them): {', '.join(custom)}")
    if problems:
        fail(problems)


def find(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def cmd_rbac(path, mode, namespace=None):
    docs = load(path)
    problems = []
    roles = find(docs, "Role") + find(docs, "ClusterRole")
    bindings = find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
    want_role, want_binding = (("Role", "RoleBinding") if mode == "namespaced"
                               else ("ClusterRole", "ClusterRoleBinding"))
    if [r["kind"] for r in roles] != [want_role]:
        problems.append(f"expected exactly one {want_role}, got {[label(r) for r in roles]}")
    if [b["kind"] for b in bindings] != [want_binding]:
        problems.append(f"expected exactly one {want_binding}, got "
                        f"{[label(b) for b in bindings]}")
    if mode == "namespaced":
        for o in roles + bindings:
            if o["metadata"].get("namespace") != namespace:
                problems.append(f"{label(o)}: namespace {o['metadata'].get('namespace')!r}, "
                                f"expected the watched namespace {namespace!r}")
    granted = {}
    for role in roles:
        for i, rule in enumerate(role.get("rules") or []):
            where = f"{label(role)} rules[{i}]"
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                if any("*" in str(v) for v in rule.get(field) or []):
                    problems.append(f"{where}: wildcard in {field}: {rule[field]}")
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: nonResourceURLs are never needed")
            for g in rule.get("apiGroups") or []:
                for r in rule.get("resources") or []:
                    granted.setdefault((g, r), set()).update(rule.get("verbs") or [])
    for (g, r), verbs in granted.items():
        if r.split("/")[0] == "secrets" and verbs & SECRET_READ_VERBS:
            problems.append(f"secrets ({g or 'core'}): read verbs {sorted(verbs & SECRET_READ_VERBS)}"
                            " granted; the operator only creates, patches and deletes them")
    if roles and granted != EXPECTED_RULES:
        for key in sorted(set(granted) | set(EXPECTED_RULES)):
            got, want = granted.get(key, set()), EXPECTED_RULES.get(key, set())
            if got != want:
                problems.append(f"{key[0] or 'core'}/{key[1]}: granted {sorted(got)}, "
                                f"the operator uses {sorted(want)}")
    deployment = (find(docs, "Deployment") or [{}])[0]
    sa_name = deployment.get("spec", {}).get("template", {}).get("spec", {}).get(
        "serviceAccountName")
    for b in bindings:
        if b["roleRef"]["name"] not in [r["metadata"]["name"] for r in roles]:
            problems.append(f"{label(b)}: roleRef {b['roleRef']['name']} is not the chart's role")
        if [s.get("name") for s in b.get("subjects") or []] != [sa_name]:
            problems.append(f"{label(b)}: subjects {b.get('subjects')} are not the operator's "
                            f"ServiceAccount {sa_name!r}")
    if problems:
        fail(problems)
    print(f"  RBAC ({mode}): {want_role} + {want_binding}, {len(granted)} resource grants, "
          "exactly the operator's; no wildcard, no get/list/watch on secrets")


def cmd_operator(path, mode, namespace=None):
    docs = load(path)
    problems = []
    deps = find(docs, "Deployment")
    if len(deps) != 1:
        fail([f"expected one Deployment, got {[label(d) for d in deps]}"])
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    if spec.get("strategy", {}).get("type") != "Recreate":
        problems.append("strategy is not Recreate (two operators would reconcile at once)")
    if spec.get("replicas") not in (0, 1):
        problems.append(f"replicas {spec.get('replicas')}")
    if pod.get("automountServiceAccountToken") is not True:
        problems.append("operator pod does not opt in to its service-account token")
    for sa in find(docs, "ServiceAccount"):
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"{label(sa)}: mounts tokens into every pod by default")
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    (c,) = pod["containers"]
    sc = c.get("securityContext") or {}
    for key, want in (("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True),
                      ("runAsNonRoot", True)):
        if sc.get(key) is not want:
            problems.append(f"container securityContext.{key} is not {want}")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("container does not drop ALL capabilities")
    if (sc.get("runAsUser") or psc.get("runAsUser")) != 65532:
        problems.append("container does not run as uid 65532")
    res = c.get("resources") or {}
    if not res.get("requests") or not (res.get("limits") or {}).get("memory"):
        problems.append("resources need requests and a memory limit")
    for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != path_:
            problems.append(f"{probe} is not an HTTP GET on {path_}")
    args = c.get("args") or []
    if args[:1] != ["operator"]:
        problems.append(f"args do not start with the operator subcommand: {args}")
    image_args = [a for a in args if a.startswith("--image=")]
    if len(image_args) != 1:
        problems.append(f"expected one --image= argument, got {image_args}")
    ns_args = [a for a in args if a.startswith("--namespace")]
    if mode == "namespaced" and ns_args != [f"--namespace={namespace}"]:
        problems.append(f"namespaced mode must pass --namespace={namespace}, got {ns_args}")
    if mode == "cluster" and ns_args:
        problems.append(f"cluster-wide mode must not pass {ns_args}")
    if mode == "cluster" and image_args and image_args[0] != f"--image={c['image']}":
        problems.append(f"{image_args[0]} differs from the operator's own image {c['image']}")
    # Wiring: Service -> operator pod port, ServiceMonitor -> Service port.
    pod_labels = spec["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in c.get("ports") or []}
    for svc in find(docs, "Service"):
        if not set(svc["spec"]["selector"].items()) <= set(pod_labels.items()):
            problems.append(f"{label(svc)}: selector does not match the operator pod")
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in port_names:
                problems.append(f"{label(svc)}: targetPort {p.get('targetPort')} not on the pod")
    for sm in find(docs, "ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels") or {}
        svcs = [s for s in find(docs, "Service")
                if set(sel.items()) <= set(s["metadata"].get("labels", {}).items())]
        if len(svcs) != 1:
            problems.append(f"{label(sm)}: selects {len(svcs)} of the chart's Services, not 1")
        for ep in sm["spec"]["endpoints"]:
            if svcs and ep["port"] not in {p["name"] for p in svcs[0]["spec"]["ports"]}:
                problems.append(f"{label(sm)}: port {ep['port']} is not on {label(svcs[0])}")
    if problems:
        fail(problems)
    print(f"  operator Deployment ({mode}): hardened, probes, args {args}")


def _strict(schema):
    """The API server drops unknown fields (or rejects them with strict field validation):
    make that visible by forbidding them wherever the CRD lists the properties."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def cmd_examples(crd_path, *paths):
    import jsonschema  # installed with kubernetes-validate

    (crd,) = [d for d in load(crd_path) if d.get("kind") == "CustomResourceDefinition"]
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schemas = {f"{group}/{v['name']}": _strict(v["schema"]["openAPIV3Schema"])
               for v in crd["spec"]["versions"] if v.get("served")}
    problems, checked = [], []
    for path in paths:
        for doc in load(path):
            if doc.get("kind") != kind:
                continue
            schema = schemas.get(doc.get("apiVersion"))
            where = f"{path}: {label(doc)}"
            if schema is None:
                problems.append(f"{where}: apiVersion {doc.get('apiVersion')} is not served")
                continue
            # The API server checks apiVersion/kind/metadata itself; CRD schemas leave them out.
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body),
                            key=lambda e: list(e.path))
            for e in errors:
                problems.append(f"{where}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
            if not errors:
                checked.append(where)
    if not checked and not problems:
        problems.append(f"no {kind} found in {paths}")
    if problems:
        fail(problems)
    print(f"  {len(checked)} {kind}s valid against {crd_path} (unknown fields rejected): "
          + ", ".join(checked))


if __name__ == "__main__":
    cmds = {"validate": cmd_validate, "rbac": cmd_rbac, "operator": cmd_operator,
            "examples": cmd_examples}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
