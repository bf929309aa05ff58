#!/usr/bin/env python3
"""Checks Draco's dashboards and metrics against a real Prometheus (stdlib only).

  check.py static                       dashboards: datasource only via ${datasource}, variables
  check.py live --draco BIN --job YAML  a real Prometheus scrapes a real `draco run` drill; then
                                        every panel query must parse and return data, every
                                        metric a dashboard names must exist, promtool check
                                        metrics must pass on live scrapes, the alert rules must
                                        evaluate and the Byzantine alert must fire
  check.py live ... --render PNG        also draws accuracy and suspects over time (matplotlib)

Every failure is printed with what was expected and what was found; the exit code is 1.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import operator_drill  # noqa: E402  (next to this file)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARDS = [os.path.join(ROOT, "dashboards", f) for f in ("draco-job.json", "draco-operator.json")]
RULES = os.path.join(ROOT, "alerts", "draco.rules.yaml")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")
DATASOURCE_REFS = {"${datasource}", "$datasource"}

# Panels allowed to return no data in the drill, and why. Everything else must return data.
MAY_BE_EMPTY = {
    # Only non-zero rates are drawn; a healthy drill may have no rejected request at all.
    ("draco-job", "Rejected requests"),
}
# Panel queries (dashboard, title, refId) that only show something (non-zero) under a failure
# the drill does not stage, or need a real cluster; printed by the live check. Every other
# query must be non-zero at some point of the drill.
FAILURE_ONLY = {
    ("draco-job", "Rejected requests", "A"):
        "requests with a bad token, a wrong rank or step, a malformed body; no drill worker sends one",
    ("draco-job", "Stragglers / erasures", "A"):
        "draco_missing_total counts a worker only when a step was decided at the straggler timeout "
        "without it; with repetition (r = 3, s = 1) a group decides as soon as two copies agree, and a "
        "group holding a liar waits for the missing worker instead (ps-service StepLoop::run), so the "
        "drill's repetition code never counts one; a cyclic code with stragglerTolerance would",
    ("draco-operator", "Running / failed jobs", "A"):
        "Running needs decoded steps from the PS's /status, which the operator reads at "
        "<job>-ps.<namespace>.svc:9090 (cluster DNS, not configurable): unreachable without a cluster",
}
# Series (dashboard, title, refId, label, value) inside panels that show data, which stay zero
# unless something fails. Listed so that it is known which lines of a panel the drill proves.
FAILURE_ONLY_SERIES = {
    ("draco-job", "Decode outcomes", "A", "outcome", "undecodable"):
        "a group without s + 1 identical copies although every worker sent: more liars than s",
    ("draco-job", "Decode outcomes", "A", "outcome", "bound_violated"):
        "two different vectors each backed by s + 1 workers: more liars than s",
    ("draco-operator", "DracoJobs by phase", "A", "phase", "Running"):
        "as for 'Running / failed jobs': needs the PS's /status through cluster DNS",
    ("draco-operator", "DracoJobs by phase", "A", "phase", "Suspended"):
        "a user's runPolicy.suspend; the operator tests (operator/tests/controller.rs) cover it",
    ("draco-operator", "DracoJobs by phase", "A", "phase", "Pending"):
        "the gauge counts a job after a successful reconcile, which already gives it a condition "
        "(Created, or Failed for an invalid spec): a job is never counted Pending",
}
# Template variables as Grafana would substitute them for a 1 s scrape interval.
SUBSTITUTIONS = {"$__rate_interval": "5s", "$__interval": "2s", "$__range": "1m"}
# Series Prometheus makes itself: may appear in dashboards without being exported by Draco.
PROMETHEUS_SERIES = {"up"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}", flush=True)


def load_dashboards():
    out = {}
    for path in DASHBOARDS:
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = json.load(f)
    return out


def panels(dashboard):
    """Every panel, rows' nested panels included."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def targets(dashboard):
    for p in panels(dashboard):
        for t in p.get("targets", []):
            if "expr" in t:
                yield p, t


def check_static():
    for name, d in load_dashboards().items():
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            fail(f"{name}: needs a template variable 'datasource' of type datasource, query prometheus; found {ds}")
        if name == "draco-job" and variables.get("job", {}).get("type") != "query":
            fail(f"{name}: needs a query variable 'job' (the job selector)")

        # Every datasource reference, wherever it is, must be the variable: no uid or name.
        def walk(node, where):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "datasource" and not (isinstance(v, dict) and v.get("uid") in DATASOURCE_REFS):
                        fail(f"{name}: {where}.datasource is {json.dumps(v)}, expected {{'uid': '${{datasource}}'}}")
                    walk(v, f"{where}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}[{i}]")

        walk(d, name)
        count = 0
        for p, t in targets(d):
            count += 1
            if p.get("datasource", {}).get("uid") not in DATASOURCE_REFS:
                fail(f"{name}: panel {p.get('title')!r} has no ${{datasource}} reference")
            if name == "draco-job" and 'draco_job="$job"' not in t["expr"]:
                fail(f"{name}: panel {p.get('title')!r} ignores the job selector: {t['expr']}")
        if count == 0:
            fail(f"{name}: no panel queries found")
        print(f"static: {name}: {count} panel queries, datasource only via ${{datasource}}")


# ---------------------------------------------------------------- metric names


def documented_metrics():
    """section -> {name: type} from docs/metrics.md's tables."""
    out, section = {}, None
    with open(METRICS_DOC) as f:
        for line in f:
            if line.startswith("## "):
                section = line[3:].strip()
            m = re.match(r"\| `(draco_[a-z0-9_]+)` \| (\w+) \|", line)
            if m and section:
                out.setdefault(section, {})[m.group(1)] = m.group(2)
    return out


def scrape_families(text):
    """{name: type} from a text exposition."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


# PromQL words that look like identifiers but name no series.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "atan2", "inf", "nan", "start", "end"}


def expr_metrics(expr, histograms):
    """Every metric name an expression selects: bare (`sum(draco_operator_jobs)`), with a
    selector or a range, or as `{__name__="..."}`; never a function, a keyword, a label name
    (in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left (...)`, matchers)
    or anything inside a string."""
    names = set()
    names.update(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # ranges and subqueries
    # Label lists go, keyword and all: `sum by (le) (x)` leaves `sum  (x)`, a function call.
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", stripped):
        name = m.group(1)
        if name in PROMQL_WORDS:
            continue
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in histograms:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def template_queries(dashboard):
    """(variable name, metric, label) of every `label_values(metric, label)` query variable."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q or "")
        out.append((v["name"], q, m and m.group(1), m and m.group(2)))
    return out


# ---------------------------------------------------------------- processes and HTTP


def loopback_port(taken=()):
    """A loopback port that is free now and that outgoing connections will not take meanwhile:
    random below the kernel's ephemeral range (where bind(0) ports and every outgoing
    connection's local port come from), probed; bind(0) only as a fallback. As cli/src/local.rs."""
    lowest = 10000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_start = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    if ephemeral_start > lowest + 1000:
        for _ in range(200):
            port = random.randrange(lowest, ephemeral_start)
            if port in taken:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class PortTaken(Exception):
    pass


class Prometheus:
    def __init__(self, workdir, sd_file, static_targets=None):
        """Starts Prometheus on a probed loopback port; when the port was taken between the probe
        and Prometheus's bind, retries on another."""
        for attempt in range(5):
            try:
                self._start(workdir, sd_file, static_targets, attempt)
                return
            except PortTaken:
                print(f"live: prometheus could not bind 127.0.0.1:{self.port}; trying another port", flush=True)
        raise SystemExit("FAIL: prometheus could not bind a loopback port in 5 attempts")

    def _start(self, workdir, sd_file, static_targets, attempt):
        static_targets = static_targets or {}
        self.port = loopback_port({int(t.rsplit(":", 1)[1]) for t, _ in static_targets.values()})
        self.base = f"http://127.0.0.1:{self.port}"
        config = os.path.join(workdir, "prometheus.yml")
        scrape_configs = [{"job_name": "draco", "file_sd_configs": [{"files": [sd_file], "refresh_interval": "1s"}]}]
        for job_name, (target, labels) in static_targets.items():
            scrape_configs.append({"job_name": job_name, "static_configs": [{"targets": [target], "labels": labels}]})
        with open(config, "w") as f:
            # JSON is YAML: no YAML library needed.
            json.dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [RULES],
                    "scrape_configs": scrape_configs,
                },
                f,
            )
        self.log = open(os.path.join(workdir, f"prometheus.log{'.' + str(attempt) if attempt else ''}"), "w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                if "address already in use" in open(self.log.name).read():
                    raise PortTaken()
                raise SystemExit(f"FAIL: prometheus exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if "Ready" in http_get(f"{self.base}/-/ready", 1):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("FAIL: prometheus not ready within 20 s")
            time.sleep(0.2)

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            body = http_get(url, 10)
        except urllib.error.HTTPError as e:
            body = e.read().decode()
        reply = json.loads(body)
        if reply.get("status") != "success":
            raise ValueError(f"{reply.get('errorType')}: {reply.get('error')}")
        return reply["data"]

    def query_range(self, expr, start, end, step=1):
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}s")["result"]

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)["result"]

    def stop(self):
        stop_process(self.proc)


def stop_process(proc):
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the process and its children
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def values_of(result):
    for series in result:
        if "value" in series:
            yield float(series["value"][1])
        for _, v in series.get("values", []):
            yield float(v)


# ---------------------------------------------------------------- the live check


def check_live(args):
    job_name = re.search(r"^\s*name:\s*(\S+)", open(args.job).read(), re.M).group(1)
    workdir = tempfile.mkdtemp(prefix="draco-obs-")
    sd_file = os.path.join(workdir, "targets.json")
    with open(sd_file, "w") as f:
        f.write("[]\n")  # Prometheus starts before the job: no targets yet
    prom, run, crashed, operator = None, None, False, None
    started = time.time()
    try:
        # The operator first: Prometheus scrapes it from its first round.
        api_port = loopback_port()
        operator_port = loopback_port({api_port})
        operator = operator_drill.OperatorDrill(workdir, args.draco, api_port, operator_port)
        print(f"live: draco operator on 127.0.0.1:{operator_port}, fake Kubernetes API on 127.0.0.1:{api_port}",
              flush=True)
        prom = Prometheus(workdir, sd_file, {"draco-operator": (f"127.0.0.1:{operator_port}", {})})
        print(f"live: prometheus ready on {prom.base} in {time.time() - started:.1f} s", flush=True)
        run_log = open(os.path.join(workdir, "draco-run.log"), "w")
        run = subprocess.Popen(
            [args.draco, "run", "-f", args.job, "--run-dir", os.path.join(workdir, "run"),
             "--prometheus-sd", sd_file, "--report-seconds", "5"],
            stdout=run_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        sel = f'draco_job="{job_name}"'
        good_at, scrapes, fired, killed_at, worker_killed_at = None, {}, set(), None, None
        deadline = time.time() + args.timeout
        while run.poll() is None:
            if time.time() > deadline:
                raise SystemExit(f"FAIL: draco run still running after {args.timeout} s; see {run_log.name}")
            time.sleep(0.5)
            try:
                targets_up = prom.query(f"count(up{{{sel}}} == 1)")
                history = prom.query(f"min(count_over_time(up{{{sel}}}[1m]))")
            except (OSError, ValueError):
                continue
            expected = None
            try:
                with open(sd_file) as f:
                    groups = json.load(f)
                expected = len(groups)
            except (OSError, ValueError):
                pass
            up = int(next(values_of(targets_up), 0))
            # All targets answering, each with a few scrapes of history: rates have data here.
            scraped = next(values_of(history), 0)
            warmed = expected and up == expected and scraped >= 5
            # Kills wait for a few scrapes of every target: a restart or reconnect before them
            # would be the series' starting value, not an increase (a fast, idle machine runs
            # the drill's first 300 steps in about 5 s). The worker dies a few seconds after the
            # PS, so the two recoveries show apart.
            if expected and up == expected and scraped >= 3:
                if args.kill_ps_at and killed_at is None:
                    killed_at = kill_at_step(prom, sel, args.kill_ps_at, workdir)
                if args.kill_worker_at and worker_killed_at is None and time.time() > (killed_at or 0) + 3:
                    worker_killed_at = kill_at_step(prom, sel, args.kill_worker_at, workdir, "worker-1")
            if warmed:
                good_at = time.time()
                for g in groups:
                    role = g["labels"]["draco_role"]
                    if role not in scrapes:
                        try:
                            scrapes[role] = http_get(f"http://{g['targets'][0]}/metrics")
                        except OSError:
                            pass  # e.g. the PS being killed right now: the next round retries
            try:
                for a in prom.api("alerts")["alerts"]:
                    if a["state"] == "firing" and a["labels"].get("draco_job") == job_name:
                        fired.add(a["labels"]["alertname"])
            except (OSError, ValueError):
                pass
        run_log.close()
        print(f"live: draco run exited {run.returncode} after {time.time() - started:.1f} s", flush=True)
        if run.returncode != 0:
            fail(f"draco run failed ({run.returncode}); its output:\n" + open(run_log.name).read()[-3000:])
        if good_at is None:
            raise SystemExit(f"FAIL: Prometheus never saw every target of {job_name} up with 5 s of history; "
                             f"see {run_log.name} and {prom.log.name}")
        if set(scrapes) != {"ps", "worker"}:
            fail(f"could not scrape both a PS and a worker during the run (got {sorted(scrapes)})")
        check_operator(operator, scrapes)
        print(f"live: evaluating at {time.strftime('%H:%M:%S', time.localtime(good_at))}, "
              f"when every target was up", flush=True)
        if args.kill_ps_at:
            check_restart(prom, sel, good_at, killed_at)
        if args.kill_worker_at and worker_killed_at is None:
            fail("--kill-worker-at: the PS never reached that step, no worker was killed")
        check_scrapes(scrapes, workdir)
        live_names = {n for text in scrapes.values() for n in scrape_families(text)}
        check_panels(prom, good_at, job_name, live_names, started, time.time())
        check_variables(prom, job_name)
        check_rules(prom, fired)
        check_lies_named(prom, sel, good_at)
        if args.render:
            render(prom, job_name, started, time.time(), args.render)
    except BaseException:
        crashed = True  # keep the logs the message points at
        raise
    finally:
        stop_process(run)
        if operator:
            operator.stop()
        if prom:
            prom.stop()
        if failures or crashed or args.keep:
            print(f"live: files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def kill_at_step(prom, sel, step, workdir, process="ps"):
    """SIGKILLs a process of the job (`ps`, `worker-1`) once the PS passed `step`, like a crashed
    pod; `draco run` restarts it."""
    try:
        at = next(values_of(prom.query(f"max(draco_step{{{sel}}})")), 0)
    except (OSError, ValueError):
        return None
    if at < step:
        return None
    with open(os.path.join(workdir, "run", "pids", process)) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)
    print(f"live: killed {process} (pid {pid}) at step {at:.0f}", flush=True)
    return time.time()


def check_operator(operator, scrapes):
    """The operator's story must have happened (else its panels show nothing real), it must have
    survived, and the fake API server must have answered every request it made."""
    want = {f"{operator_drill.NAMESPACE}/fashion-mnist": "Succeeded",
            f"{operator_drill.NAMESPACE}/invalid-spec": "Failed"}
    states = operator.wait_for(want, 30)
    print(f"live: operator: kubelet: {'; '.join(operator.story) or 'nothing'}; job states {states}", flush=True)
    for job, state in want.items():
        if states.get(job) != state:
            fail(f"operator: DracoJob {job} is {states.get(job)}, expected {state}; see {operator.log.name}")
    if operator.proc.poll() is not None:
        fail(f"draco operator exited ({operator.proc.returncode}) during the drill; see {operator.log.name}")
    else:
        try:
            scrapes["operator"] = operator.scrape()
        except OSError as e:
            fail(f"could not scrape the operator's /metrics: {e}")
    reasons = sorted({e.get("reason") for e in operator.events()})
    print(f"live: operator: {len(operator.events())} events.k8s.io/v1 events stored, reasons {reasons}")
    summary = operator.request_summary()
    print(f"live: operator: {sum(summary.values())} requests to the Kubernetes API "
          f"(full log: {operator.api.log_file.name}):")
    for (method, path, code), n in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        print(f"    {n:5d}  {method:6s} {path} -> {code}")
    # A request the fake cannot route or parse is one it does not implement: a gap in the mock,
    # not the operator's behaviour. (403 in the deleted namespace and 404/409 are expected.)
    for (method, path, code), n in summary.items():
        if code in (400, 405, 415, 422):
            fail(f"operator: the fake Kubernetes API answered {method} {path} with {code} ({n}x): not implemented")
    for request in sorted(set(operator.api.unrouted)):
        fail(f"operator: the fake Kubernetes API does not serve {request} (404): add the resource to fake_kube_api.py")


def check_restart(prom, sel, at, killed_at):
    """The restart must show where the dashboard looks for it, after the PS came back."""
    if killed_at is None:
        fail("--kill-ps-at: the PS never reached that step, nothing was killed")
        return
    if at < killed_at:
        fail("after the PS was killed, Prometheus never again saw every target up")
        return
    window = f"[{int(at - killed_at) + 10}s]"
    restarts = prom.query(f'sum(changes(draco_start_time_seconds{{{sel}, draco_role="ps"}}{window}))', at)
    reconnects = prom.query(f"sum(increase(draco_worker_reconnects_total{{{sel}}}{window}))", at)
    n_restarts = next(values_of(restarts), 0)
    n_reconnects = next(values_of(reconnects), 0)
    print(f"live: after the kill: PS restarts seen {n_restarts:.0f}, worker reconnects {n_reconnects:.1f}")
    if n_restarts < 1:
        fail("the killed PS's restart does not show in draco_start_time_seconds")
    if n_reconnects <= 0:
        fail("no worker counted a reconnect after the PS was killed")


def check_lies_named(prom, sel, at):
    """The numbers must mean something: lies the workers counted forging and lies the PS named
    agree (up to scrape skew and lies lost with a killed PS)."""
    window = SUBSTITUTIONS["$__range"]
    forged = next(values_of(prom.query(f"sum(increase(draco_worker_forged_messages_total{{{sel}}}[{window}]))", at)), 0)
    named = next(values_of(prom.query(f"sum(increase(draco_suspects_total{{{sel}}}[{window}]))", at)), 0)
    print(f"live: lies forged by the workers {forged:.0f}, named by the PS {named:.0f} (extrapolated increases)")
    if forged <= 0 or abs(forged - named) > 0.15 * forged:
        fail(f"the drill's lies: workers forged {forged:.1f}, the PS named {named:.1f} (want both > 0, within 15%)")


def check_scrapes(scrapes, workdir):
    docs = documented_metrics()
    for role, section in (("ps", "Parameter server"), ("worker", "Worker"), ("operator", "Operator")):
        text = scrapes.get(role)
        if text is None:
            continue
        path = os.path.join(workdir, f"scrape-{role}.txt")
        with open(path, "w") as f:
            f.write(text)
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        if lint.returncode != 0:
            fail(f"promtool check metrics on the live {role} scrape ({path}):\n{lint.stdout}{lint.stderr}")
        else:
            print(f"live: promtool check metrics: {role} scrape OK ({len(scrape_families(text))} families)")
        live = scrape_families(text)
        documented = docs.get(section, {})
        for name, kind in live.items():
            if documented.get(name) != kind:
                fail(f"live {role} scrape exports {name} ({kind}); docs/metrics.md ## {section} says "
                     f"{documented.get(name, 'nothing')}")
        for name in documented.keys() - live.keys():
            fail(f"docs/metrics.md ## {section} lists {name}, the live {role} scrape has no such metric")


def check_panels(prom, at, job_name, live_names, start, end):
    """Every panel query: its metrics are exported (live) and documented, Prometheus accepts it,
    it returns data (the job dashboard at `at`, when every target was up; the operator's at some
    point of the drill: its rates only move when a reconcile ran), and some series is non-zero at
    some point of the drill, unless the query is listed in FAILURE_ONLY with its reason."""
    docs = documented_metrics()
    documented = {n: k for section in docs.values() for n, k in section.items()}
    histograms = {n for n, k in documented.items() if k == "histogram"}
    with_data, allowed_empty, total, zero_listed = 0, 0, 0, []
    listed_seen = set()
    for name, d in load_dashboards().items():
        for p, t in targets(d):
            total += 1
            title = p.get("title")
            ref = t.get("refId")
            expr = t["expr"]
            for k, v in SUBSTITUTIONS.items():
                expr = expr.replace(k, v)
            expr = expr.replace("$job", job_name)
            where = f"{name} / {title!r} / {ref}"
            selected = expr_metrics(expr, histograms)
            if not selected:
                fail(f"{where}: no metric name found in the query\n    {expr}")
            for metric in selected - PROMETHEUS_SERIES:
                if metric not in documented:
                    fail(f"{where}: metric {metric} is neither exported nor documented in docs/metrics.md")
                elif metric not in live_names:
                    fail(f"{where}: metric {metric} is not in the live PS, worker or operator scrape")
            try:
                result = prom.query(expr, at)
                over_time = prom.query_range(expr, start, end)
            except ValueError as e:
                fail(f"{where}: Prometheus rejects the query: {e}\n    {expr}")
                continue
            if name == "draco-operator":
                result = over_time
            finite = [v for v in values_of(result) if not math.isnan(v)]
            if finite:
                with_data += 1
            elif (name, title) in MAY_BE_EMPTY:
                allowed_empty += 1
            else:
                fail(f"{where}: no data ({len(result)} series, none with a number) during the drill\n    {expr}")
            # Data that is zero all along shows nothing: only panels listed as failure-only may.
            nonzero = [v for v in values_of(over_time) if not math.isnan(v) and v != 0]
            reason = FAILURE_ONLY.get((name, title, ref))
            if reason:
                listed_seen.add((name, title, ref))
                zero_listed.append((where, reason, bool(nonzero)))
            elif not nonzero and (finite or (name, title) not in MAY_BE_EMPTY):
                fail(f"{where}: zero throughout the drill ({len(over_time)} series): it never showed anything; "
                     f"exercise it in the drill or list it in FAILURE_ONLY with the reason\n    {expr}")
            for (sd, st, sref, label, value), why in FAILURE_ONLY_SERIES.items():
                if (sd, st, sref) == (name, title, ref):
                    listed_seen.add((sd, st, sref, label, value))
                    series = [s for s in over_time if s["metric"].get(label) == value]
                    if not series:
                        fail(f"{where}: FAILURE_ONLY_SERIES lists its {label}={value} series, the query has none")
                    elif any(v != 0 and not math.isnan(v) for v in values_of(series)):
                        print(f"live: note: {where} {label}={value} (listed failure-only) was non-zero")
                    else:
                        zero_listed.append((f"{where} {{{label}={value!r}}}", why, False))
    for key in set(FAILURE_ONLY) | set(FAILURE_ONLY_SERIES):
        if key not in listed_seen:
            fail(f"FAILURE_ONLY lists {key}, which no dashboard query matches")
    print(f"live: {total} panel queries: {with_data} returned data, {allowed_empty} empty as listed in "
          f"MAY_BE_EMPTY, {total - with_data - allowed_empty} failed; every other query was non-zero at "
          f"some point of the drill", flush=True)
    print(f"live: {len(zero_listed)} panel queries or series only show data under failure or need a cluster "
          f"(FAILURE_ONLY), not exercised by the drill:")
    for where, reason, nonzero in zero_listed:
        print(f"    {where}{' (had data this time)' if nonzero else ''}: {reason}")


def check_variables(prom, job_name):
    """Each `label_values(metric, label)` variable: the metric is a live series with that label,
    and Prometheus lists the drill's job among its values (what Grafana's selector offers)."""
    for name, d in load_dashboards().items():
        for var, query, metric, label in template_queries(d):
            where = f"{name}: variable ${var} ({query})"
            if metric is None:
                fail(f"{where}: not a label_values(metric, label) query; check.py cannot check it")
                continue
            values = prom.api("label/" + label + "/values", **{"match[]": metric})
            if job_name not in values:
                fail(f"{where}: Prometheus's values of {label} on {metric} are {values}, without the drill's "
                     f"job {job_name!r}")
            else:
                print(f"live: {where}: {label} values {values}")


def check_rules(prom, fired):
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if len(rules) == 0:
        fail("Prometheus loaded no rules from alerts/draco.rules.yaml")
    for r in rules:
        if r.get("health") != "ok":
            fail(f"rule {r.get('name')}: health {r.get('health')}: {r.get('lastError')}")
    print(f"live: {len(rules)} alert rules evaluated by Prometheus, health: "
          f"{sorted({r.get('health') for r in rules})}; fired during the drill: {sorted(fired) or 'none'}")
    if "DracoByzantineWorkerDetected" not in fired:
        fail("the drill's liars did not fire DracoByzantineWorkerDetected")


def render(prom, job_name, start, end, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = f'draco_job="{job_name}"'
    step = max(1, int((end - start) / 300))

    def series(expr):
        out = {}
        for s in prom.api("query_range", query=expr, start=f"{start:.0f}", end=f"{end:.0f}", step=f"{step}s")["result"]:
            xs = [float(t) - start for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            out[s["metric"].get("worker", "")] = (xs, ys)
        return out

    acc = series(f"max(draco_test_accuracy_ratio{{{sel}}})")
    steps = series(f"max(draco_step{{{sel}}})")
    # last_over_time: a worker that already exited at the end still counts its lies.
    named = series(f"sum by (worker) (last_over_time(draco_suspects_total{{{sel}}}[30s]))")
    named_total = series(f"sum(last_over_time(draco_suspects_total{{{sel}}}[30s]))")
    forged = series(f"sum(last_over_time(draco_worker_forged_messages_total{{{sel}}}[30s]))")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for xs, ys in acc.values():
        # The gauge reads 0 until the first evaluation: not an accuracy, so not drawn.
        pts = [(x, 100 * y) for x, y in zip(xs, ys) if y > 0]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:green", label="test accuracy (%)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_ylim(0, 100)
    ax1.grid(alpha=0.3)
    axs = ax1.twinx()
    for xs, ys in steps.values():
        axs.plot(xs, ys, color="tab:gray", linestyle="--", label="step")
    axs.set_ylabel("step")
    ax1.set_title(f"Draco drill '{job_name}' as Prometheus recorded it (1 s scrapes)")
    lines = ax1.get_lines() + axs.get_lines()
    ax1.legend(lines, [l.get_label() for l in lines], loc="lower right")
    for xs, ys in forged.values():
        ax2.plot(xs, ys, color="black", linewidth=4, alpha=0.25, label="lies forged (workers' count)")
    for xs, ys in named_total.values():
        ax2.plot(xs, ys, color="black", linestyle=":", linewidth=1.5, label="lies named (PS's count)")
    for worker, (xs, ys) in sorted(named.items(), key=lambda kv: int(kv[0] or 0)):
        ax2.plot(xs, ys, linewidth=1, label=f"named: worker {worker}")
    ax2.set_ylabel("suspect detections (cumulative)")
    ax2.set_xlabel("seconds since start")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"live: rendered {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("static")
    live = sub.add_parser("live")
    live.add_argument("--draco", required=True, help="the draco binary")
    live.add_argument("--job", required=True, help="DracoJob YAML of the drill")
    # A debug build on 2 busy cores takes minutes; the limit only catches a hung job.
    live.add_argument("--timeout", type=float, default=600, help="seconds the job may take")
    live.add_argument("--render", help="also write this PNG (needs matplotlib)")
    live.add_argument("--keep", action="store_true", help="keep the work directory")
    live.add_argument("--kill-ps-at", type=int, help="SIGKILL the PS once it passed this step (restart drill)")
    live.add_argument("--kill-worker-at", type=int, help="SIGKILL worker 1 once the PS passed this step")
    args = parser.parse_args()
    # SIGTERM (e.g. from the calling script's trap) runs the finally blocks that stop processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.cmd == "static":
        check_static()
    else:
        for tool in ("prometheus", "promtool"):
            if shutil.which(tool) is None:
                raise SystemExit(f"FAIL: {tool} not found (scripts/install-observability-tools.sh installs it)")
        if not os.access(args.draco, os.X_OK):
            raise SystemExit(f"FAIL: {args.draco} is not an executable draco binary (build the workspace first)")
        check_live(args)
    if failures:
        print(f"\n{len(failures)} observability check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
