//! The controller against a fake API server (the Kubernetes boundary; see fake_api) and a real
//! HTTP `/status` endpoint standing in for the PS: what one reconcile writes, how pod phases and
//! exit codes become conditions, backoff, suspend/resume, deadlines, invalid specs, no writes
//! when nothing changed, and same-name re-creation.

mod fake_api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use draco_api::DracoJob;
use draco_core::status::{Phase, Status, Suspect};
use draco_operator::PodDefaults;
use draco_operator::metrics::OperatorMetrics;
use draco_operator::reconcile::{Context, error_policy, reconcile};
use fake_api::{FakeApi, writes};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JOBS: &str = "/apis/draco.dev/v1alpha1/namespaces/ml/dracojobs";
const PODS: &str = "/api/v1/namespaces/ml/pods";

const SPEC: &str = "
apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: fm, namespace: ml, uid: job-uid-1, generation: 1}
spec:
  workers: 3
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  model: {architecture: mlp, hidden: [16]}
  dataset: {format: synthetic}
  training:
    steps: 100
    batchSize: 30
    optimizer: {type: sgd, learningRate: 0.05}
";

fn job_json(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap()
}

/// A PS `/status` endpoint on a real socket, serving whatever the test sets.
async fn ps_endpoint(status: Arc<Mutex<Option<Status>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let status = status.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = status.lock().unwrap().as_ref().map(|s| serde_json::to_string(s).unwrap());
                let response = match body {
                    Some(b) => format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{b}"),
                    None => "HTTP/1.0 503 Service Unavailable\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

struct Harness {
    fake: Arc<FakeApi>,
    ctx: Arc<Context>,
    ps: Arc<Mutex<Option<Status>>>,
    now: Arc<Mutex<Timestamp>>,
}

impl Harness {
    async fn new(job: Value) -> Harness {
        let fake = FakeApi::new();
        fake.put(&format!("{JOBS}/{}", job["metadata"]["name"].as_str().unwrap()), job);
        let ps = Arc::new(Mutex::new(None));
        let address = ps_endpoint(ps.clone()).await;
        let now = Arc::new(Mutex::new("2026-12-03T10:00:00Z".parse::<Timestamp>().unwrap()));
        let mut ctx = Context::new(
            fake.client(),
            PodDefaults { image: "draco:test".into(), image_pull_policy: None },
            Arc::new(OperatorMetrics::new()),
        );
        ctx.ps_address = Box::new(move |_, _| address.clone());
        let clock = now.clone();
        ctx.now = Box::new(move || *clock.lock().unwrap());
        Harness { fake, ctx: Arc::new(ctx), ps, now }
    }

    fn job(&self, name: &str) -> DracoJob {
        serde_json::from_value(self.fake.get(&format!("{JOBS}/{name}")).expect("job stored")).unwrap()
    }

    /// One reconcile of the stored job, as the controller would run it after a watch event.
    async fn reconcile(&self, name: &str) -> Vec<String> {
        self.fake.take_log();
        reconcile(Arc::new(self.job(name)), self.ctx.clone()).await.expect("reconcile");
        writes(&self.fake.take_log())
    }

    fn status(&self, name: &str) -> Value {
        self.fake.get(&format!("{JOBS}/{name}")).unwrap()["status"].clone()
    }

    fn condition(&self, name: &str, type_: &str) -> Option<(String, String, String)> {
        let status = self.status(name);
        status["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
            (
                c["status"].as_str().unwrap().into(),
                c["reason"].as_str().unwrap().into(),
                c["message"].as_str().unwrap().into(),
            )
        })
    }

    fn set_pod(&self, pod: &str, status: Value) {
        self.fake.update(&format!("{PODS}/{pod}"), json!({ "status": status }));
    }

    fn all_pods_running_and_ready(&self, job: &str, workers: usize) {
        let ready = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        self.set_pod(&format!("{job}-ps"), ready.clone());
        for rank in 0..workers {
            self.set_pod(&format!("{job}-worker-{rank}"), ready.clone());
        }
    }

    fn advance(&self, seconds: i64) {
        let mut now = self.now.lock().unwrap();
        *now = now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds)).unwrap();
    }
}

fn failed_with(code: i32) -> Value {
    json!({"phase": "Failed", "containerStatuses": [{"name": "draco", "ready": false, "restartCount": 0, "image": "draco:test",
        "imageID": "", "state": {"terminated": {"exitCode": code}}}]})
}

fn ps_status(step: u64, suspects: Vec<Suspect>) -> Status {
    Status {
        job: "fm".into(),
        phase: Phase::Running,
        message: String::new(),
        incarnation: "abc".into(),
        step,
        total_steps: 100,
        loss: Some(0.5),
        test_loss: None,
        test_accuracy: Some(0.8),
        steps_per_second: 2.0,
        resumed_from_step: 0,
        detections_total: suspects.iter().map(|s| s.count).sum(),
        suspects,
        decoded_steps: step,
        undecodable_steps: 0,
        bound_violated_steps: 0,
        missing: Default::default(),
        params_digest: "00ff".into(),
        params_count: 10,
    }
}

fn owner_uid(object: &Value) -> &str {
    object["metadata"]["ownerReferences"][0]["uid"].as_str().unwrap_or("")
}

#[tokio::test]
async fn first_reconcile_creates_every_child_with_owner_refs() {
    let h = Harness::new(job_json(SPEC)).await;
    let writes = h.reconcile("fm").await;
    for expected in [
        "POST /api/v1/namespaces/ml/configmaps",
        "POST /api/v1/namespaces/ml/services",
        "POST /apis/networking.k8s.io/v1/namespaces/ml/networkpolicies",
        "POST /api/v1/namespaces/ml/secrets",
        "PATCH /apis/draco.dev/v1alpha1/namespaces/ml/dracojobs/fm/status",
    ] {
        assert!(writes.contains(&expected.to_string()), "{expected} missing from {writes:?}");
    }
    assert_eq!(writes.iter().filter(|w| *w == "POST /api/v1/namespaces/ml/pods").count(), 4, "{writes:?}");
    for path in [
        "/api/v1/namespaces/ml/configmaps/fm-config",
        "/api/v1/namespaces/ml/services/fm-ps",
        "/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/fm-ps",
        "/api/v1/namespaces/ml/secrets/fm-tokens-job-uid-1",
        "/api/v1/namespaces/ml/pods/fm-ps",
        "/api/v1/namespaces/ml/pods/fm-worker-0",
        "/api/v1/namespaces/ml/pods/fm-worker-2",
    ] {
        let object = h.fake.get(path).unwrap_or_else(|| panic!("{path} not created"));
        assert_eq!(owner_uid(&object), "job-uid-1", "{path}");
        assert_eq!(object["metadata"]["ownerReferences"][0]["controller"], true, "{path}");
    }
    // Each worker mounts only its own token.
    let worker = h.fake.get("/api/v1/namespaces/ml/pods/fm-worker-2").unwrap();
    let env = worker["spec"]["containers"][0]["env"].as_array().unwrap();
    let token = env.iter().find(|e| e["name"] == "DRACO_TOKEN").unwrap();
    assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "worker-2");
    assert!(worker["spec"]["volumes"].as_array().unwrap().iter().all(|v| v.get("secret").is_none()));
    let (status, reason, _) = h.condition("fm", "Created").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "JobCreated"));
    assert_eq!(h.status("fm")["state"], "Created");
    assert_eq!(h.status("fm")["observedGeneration"], 1);
    assert!(h.fake.keys_under("/apis/events.k8s.io/v1/namespaces/ml/events").len() == 1, "one Created event");
}

#[tokio::test]
async fn pod_phases_and_ps_progress_become_conditions() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    // Pods created but not ready: not Running.
    h.reconcile("fm").await;
    let (status, reason, _) = h.condition("fm", "Running").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PodsNotReady"));
    assert_eq!(h.status("fm")["workersReady"], "0/3");
    // Ready, but the PS has not decoded a step: still not Running.
    h.all_pods_running_and_ready("fm", 3);
    *h.ps.lock().unwrap() = Some(ps_status(0, vec![]));
    h.reconcile("fm").await;
    assert_eq!(h.condition("fm", "Running").unwrap().1, "WaitingForFirstStep");
    // Steps decoded and a liar named: Running, ByzantineDetected, the suspects table, an event.
    let liar = Suspect { worker: 1, count: 7, first_step: 3, last_step: 9, reason: "outvoted".into() };
    *h.ps.lock().unwrap() = Some(ps_status(10, vec![liar]));
    let writes = h.reconcile("fm").await;
    assert_eq!(h.condition("fm", "Running").unwrap().0, "True");
    assert_eq!(h.status("fm")["state"], "Running");
    assert_eq!(h.condition("fm", "ByzantineDetected").unwrap().0, "True");
    let byz = &h.status("fm")["byzantine"];
    assert_eq!(byz["suspectedWorkers"], 1);
    assert_eq!(
        byz["suspects"][0],
        json!({"worker": 1, "count": 7, "firstStep": 3, "lastStep": 9, "reason": "outvoted"})
    );
    assert_eq!(h.status("fm")["training"]["step"], 10);
    assert_eq!(h.status("fm")["workersReady"], "3/3");
    let events: Vec<&String> = writes.iter().filter(|w| w.contains("/events")).collect();
    assert_eq!(events.len(), 1, "one ByzantineWorker event: {writes:?}");
    // The PS finishes: Succeeded, running workers cleaned up (cleanPodPolicy Running).
    h.set_pod("fm-ps", json!({"phase": "Succeeded"}));
    h.set_pod("fm-worker-0", json!({"phase": "Succeeded"}));
    let writes = h.reconcile("fm").await;
    assert_eq!(h.status("fm")["state"], "Succeeded");
    assert!(h.status("fm")["completionTime"].is_string());
    assert!(writes.contains(&format!("DELETE {PODS}/fm-worker-1")), "{writes:?}");
    assert!(writes.contains(&format!("DELETE {PODS}/fm-worker-2")), "{writes:?}");
    assert!(!writes.contains(&format!("DELETE {PODS}/fm-worker-0")), "finished pods keep their logs: {writes:?}");
}

#[tokio::test]
async fn unchanged_state_makes_no_writes() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    *h.ps.lock().unwrap() = Some(ps_status(10, vec![]));
    h.reconcile("fm").await;
    h.advance(10);
    let writes = h.reconcile("fm").await;
    assert!(writes.is_empty(), "nothing changed, yet: {writes:?}");
}

#[tokio::test]
async fn retryable_exit_restarts_and_permanent_exit_fails() {
    let spec = SPEC.replace("  code: repetition\n", "  code: repetition\n  worker: {restartPolicy: ExitCode}\n");
    let h = Harness::new(job_json(&spec)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    // 137 = SIGKILL (OOM, node loss): retryable; the pod is deleted and recreated.
    h.set_pod("fm-worker-1", failed_with(137));
    let writes = h.reconcile("fm").await;
    assert!(writes.contains(&format!("DELETE {PODS}/fm-worker-1")), "{writes:?}");
    assert_eq!(h.status("fm")["restarts"], 1);
    let (status, reason, message) = h.condition("fm", "Restarting").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "WorkerRestarting"));
    assert!(message.contains("exit code 137"), "{message}");
    let writes = h.reconcile("fm").await;
    assert!(writes.contains(&format!("POST {PODS}")), "recreated: {writes:?}");
    // Exit 2 (the program refused): permanent, the job fails and running pods are cleaned.
    h.all_pods_running_and_ready("fm", 3);
    h.set_pod("fm-worker-2", failed_with(2));
    let writes = h.reconcile("fm").await;
    let (status, reason, message) = h.condition("fm", "Failed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "WorkerFailed"));
    assert!(message.contains("exit code 2") && message.contains("ExitCode"), "{message}");
    assert!(writes.contains(&format!("DELETE {PODS}/fm-ps")), "{writes:?}");
    assert!(!writes.contains(&format!("DELETE {PODS}/fm-worker-2")), "the failed pod keeps its logs: {writes:?}");
    // A failed job never creates pods again.
    h.fake.remove(&format!("{PODS}/fm-ps"));
    let writes = h.reconcile("fm").await;
    assert!(!writes.iter().any(|w| w.starts_with("POST")), "{writes:?}");
}

#[tokio::test]
async fn backoff_limit_exhausted_fails_the_job() {
    let spec = SPEC
        .replace("  code: repetition\n", "  code: repetition\n  runPolicy: {backoffLimit: 1, cleanPodPolicy: All}\n");
    let h = Harness::new(job_json(&spec)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    h.set_pod("fm-worker-0", failed_with(1)); // OnFailure (default): any failure is retryable
    h.reconcile("fm").await;
    assert_eq!(h.status("fm")["restarts"], 1);
    h.reconcile("fm").await; // recreated
    h.all_pods_running_and_ready("fm", 3);
    h.set_pod("fm-worker-0", failed_with(1));
    let writes = h.reconcile("fm").await;
    let (status, reason, _) = h.condition("fm", "Failed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "BackoffLimitExceeded"));
    // cleanPodPolicy All: every pod goes, the failed one too.
    for pod in ["fm-ps", "fm-worker-0", "fm-worker-1", "fm-worker-2"] {
        assert!(writes.contains(&format!("DELETE {PODS}/{pod}")), "{pod}: {writes:?}");
    }
    assert_eq!(h.status("fm")["state"], "Failed");
}

#[tokio::test]
async fn suspend_removes_pods_and_resume_recreates_them() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    h.fake.update(&format!("{JOBS}/fm"), json!({"spec": {"runPolicy": {"suspend": true}}}));
    let writes = h.reconcile("fm").await;
    assert_eq!(writes.iter().filter(|w| w.starts_with(&format!("DELETE {PODS}/"))).count(), 4, "{writes:?}");
    assert_eq!(h.condition("fm", "Suspended").unwrap().0, "True");
    assert_eq!(h.status("fm")["state"], "Suspended");
    assert!(h.status("fm").get("startTime").is_none(), "deadline clock stops while suspended");
    assert!(h.fake.keys_under(PODS).is_empty());
    h.fake.update(&format!("{JOBS}/fm"), json!({"spec": {"runPolicy": {"suspend": false}}}));
    let writes = h.reconcile("fm").await;
    assert_eq!(writes.iter().filter(|w| **w == format!("POST {PODS}")).count(), 4, "{writes:?}");
    let (status, reason, _) = h.condition("fm", "Suspended").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "JobResumed"));
    assert_ne!(h.status("fm")["state"], "Suspended");
}

#[tokio::test]
async fn active_deadline_fails_the_job() {
    let spec = SPEC.replace("  code: repetition\n", "  code: repetition\n  runPolicy: {activeDeadlineSeconds: 600}\n");
    let h = Harness::new(job_json(&spec)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    h.advance(599);
    h.reconcile("fm").await;
    assert!(h.condition("fm", "Failed").is_none());
    h.advance(2);
    let writes = h.reconcile("fm").await;
    let (status, reason, _) = h.condition("fm", "Failed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "DeadlineExceeded"));
    assert_eq!(writes.iter().filter(|w| w.starts_with(&format!("DELETE {PODS}/"))).count(), 4, "{writes:?}");
}

#[tokio::test]
async fn invalid_spec_gets_a_condition_and_an_event_and_no_pods() {
    // 2s + e = 3 > r - 1 = 2: the CRD's CEL rule refuses it at admission; if it got in anyway
    // (an older CRD), the operator refuses it too.
    let h = Harness::new(job_json(
        &SPEC.replace("byzantineTolerance: 1", "byzantineTolerance: 1\n  stragglerTolerance: 1"),
    ))
    .await;
    let writes = h.reconcile("fm").await;
    assert!(!writes.iter().any(|w| w.contains("/pods") || w.contains("/secrets")), "{writes:?}");
    let (status, reason, message) = h.condition("fm", "Failed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("byzantineTolerance") && message.contains("2*1 + 1 = 3"), "{message}");
    assert_eq!(h.fake.keys_under("/apis/events.k8s.io/v1/namespaces/ml/events").len(), 1);
    assert!(h.fake.keys_under(PODS).is_empty());
}

#[tokio::test]
async fn a_recreated_job_never_adopts_the_old_pods() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    // The job is deleted and re-created under the same name before garbage collection ran:
    // the old pods (owned by job-uid-1) are still there.
    let mut again = job_json(&SPEC.replace("uid: job-uid-1", "uid: job-uid-2"));
    again["status"] = Value::Null;
    h.fake.put(&format!("{JOBS}/fm"), again);
    let writes = h.reconcile("fm").await;
    assert!(!writes.contains(&format!("POST {PODS}")), "would collide with the old pods: {writes:?}");
    assert!(!writes.iter().any(|w| w.starts_with("DELETE")), "the old pods are the garbage collector's: {writes:?}");
    // Its ConfigMap (and Service, NetworkPolicy) are the old job's too: never used.
    let (status, reason, message) = h.condition("fm", "Running").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "WaitingForOldObjects"), "{message}");
    assert!(message.contains("ConfigMap fm-config"), "{message}");
    // GC removes those; the old pods are still there.
    for collection in ["configmaps", "services"] {
        for key in h.fake.keys_under(&format!("/api/v1/namespaces/ml/{collection}")) {
            h.fake.remove(&key);
        }
    }
    for key in h.fake.keys_under("/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies") {
        h.fake.remove(&key);
    }
    let writes = h.reconcile("fm").await;
    assert!(!writes.contains(&format!("POST {PODS}")), "would collide with the old pods: {writes:?}");
    let (status, reason, _) = h.condition("fm", "Running").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "WaitingForOldPods"));
    assert!(h.fake.keys_under(PODS).iter().all(|p| owner_uid(&h.fake.get(p).unwrap()) == "job-uid-1"));
    // GC removes them; the new job gets its own pods.
    for pod in h.fake.keys_under(PODS) {
        h.fake.remove(&pod);
    }
    let writes = h.reconcile("fm").await;
    assert_eq!(writes.iter().filter(|w| **w == format!("POST {PODS}")).count(), 4, "{writes:?}");
    assert!(h.fake.keys_under(PODS).iter().all(|p| owner_uid(&h.fake.get(p).unwrap()) == "job-uid-2"));
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_job() {
    let spec = SPEC.replace("  code: repetition\n", "  code: repetition\n  runPolicy: {ttlSecondsAfterFinished: 60}\n");
    let h = Harness::new(job_json(&spec)).await;
    h.reconcile("fm").await;
    h.set_pod("fm-ps", json!({"phase": "Succeeded"}));
    h.reconcile("fm").await;
    assert_eq!(h.status("fm")["state"], "Succeeded");
    h.advance(30);
    let writes = h.reconcile("fm").await;
    assert!(!writes.contains(&format!("DELETE {JOBS}/fm")), "{writes:?}");
    h.advance(31);
    let writes = h.reconcile("fm").await;
    assert!(writes.contains(&format!("DELETE {JOBS}/fm")), "{writes:?}");
}

const CONFIGMAPS: &str = "/api/v1/namespaces/ml/configmaps";
const SECRETS: &str = "/api/v1/namespaces/ml/secrets";

/// A ConfigMap left by a deleted job of the same name (GC pending) is never the new job's
/// config: the job waits, says why, and creates no pods.
#[tokio::test]
async fn a_config_map_of_a_deleted_job_is_never_used() {
    let h = Harness::new(job_json(SPEC)).await;
    h.fake.put(
        &format!("{CONFIGMAPS}/fm-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "fm-config", "namespace": "ml", "uid": "cm-old",
                "ownerReferences": [{"apiVersion": "draco.dev/v1alpha1", "kind": "DracoJob", "name": "fm",
                    "uid": "job-uid-0", "controller": true}]},
            "data": {"config.json": "{\"name\": \"fm\", \"training\": {\"steps\": 5}}"}}),
    );
    let writes = h.reconcile("fm").await;
    assert!(!writes.contains(&format!("POST {PODS}")), "pods would read another job's config: {writes:?}");
    assert_eq!(owner_uid(&h.fake.get(&format!("{CONFIGMAPS}/fm-config")).unwrap()), "job-uid-0");
    let (status, reason, message) = h.condition("fm", "Running").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "WaitingForOldObjects"), "{message}");
    // A ConfigMap nobody controls is a name conflict, explained the same way.
    h.fake.put(
        &format!("{CONFIGMAPS}/fm-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fm-config", "namespace": "ml", "uid": "cm-x"}}),
    );
    let writes = h.reconcile("fm").await;
    assert!(!writes.contains(&format!("POST {PODS}")), "{writes:?}");
    let (_, reason, message) = h.condition("fm", "Running").unwrap();
    assert_eq!(reason, "NameConflict", "{message}");
    assert!(message.contains("ConfigMap fm-config") && message.contains("no controller"), "{message}");
}

/// stragglerTimeoutSeconds may change on a running job; the edit reaches the ConfigMap (the PS
/// reads it when it next starts).
#[tokio::test]
async fn an_edited_straggler_timeout_reaches_the_config() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    h.fake.update(
        &format!("{JOBS}/fm"),
        json!({"metadata": {"generation": 2}, "spec": {"stragglerTimeoutSeconds": 120.0}}),
    );
    h.reconcile("fm").await;
    assert_eq!(h.status("fm")["observedGeneration"], 2);
    let cm = h.fake.get(&format!("{CONFIGMAPS}/fm-config")).unwrap();
    let config: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(config["stragglerTimeoutSeconds"], 120.0, "the edit never reaches the processes");
}

/// The token Secret's name holds the job's UID: another `fm-tokens*` Secret (a user's, a
/// deleted job's) is never used, and a reconcile that finds the job's own Secret (created by a
/// reconcile that died before writing status) goes on without reading it.
#[tokio::test]
async fn the_token_secret_is_bound_to_the_job_uid() {
    let h = Harness::new(job_json(SPEC)).await;
    for name in ["fm-tokens", "fm-tokens-job-uid-0"] {
        h.fake.put(
            &format!("{SECRETS}/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ml", "uid": name}}),
        );
    }
    let writes = h.reconcile("fm").await;
    assert!(writes.contains(&format!("POST {SECRETS}")), "{writes:?}");
    let secret = h.fake.get(&format!("{SECRETS}/fm-tokens-job-uid-1")).unwrap();
    assert_eq!(owner_uid(&secret), "job-uid-1");
    let ps = h.fake.get(&format!("{PODS}/fm-ps")).unwrap();
    let volumes = ps["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "fm-tokens-job-uid-1"), "{volumes:?}");

    // The status write was lost (the operator died): the next reconcile meets its own Secret.
    h.fake.update(&format!("{JOBS}/fm"), json!({"status": null}));
    h.fake.take_log();
    let result = reconcile(Arc::new(h.job("fm")), h.ctx.clone()).await;
    assert!(result.is_ok(), "{:?}", result.err());
    assert!(!h.fake.take_log().iter().any(|l| l.method != "POST" && l.path.contains("/secrets")), "a Secret was read");
    assert_eq!(h.status("fm")["state"], "Created");
}

/// A pod the API server refuses for now (quota) shows in a condition with the API's message,
/// and the reconcile fails so the controller backs off.
#[tokio::test]
async fn a_pod_the_api_server_refuses_is_reported() {
    let h = Harness::new(job_json(SPEC)).await;
    h.fake.reject_posts(
        PODS,
        403,
        "pods \"fm-ps\" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=3, limited: cpu=4",
    );
    // The controller retries a failing reconcile after 5 s, 10 s, 20 s ... at most 5 min.
    let mut delays = Vec::new();
    for _ in 0..8 {
        h.fake.take_log();
        let job = Arc::new(h.job("fm"));
        let error = reconcile(job.clone(), h.ctx.clone()).await.unwrap_err();
        assert!(error.to_string().contains("fm-ps: pods \"fm-ps\" is forbidden: exceeded quota"), "{error}");
        delays.push(error_policy(job, &error, h.ctx.clone()));
    }
    let secs = |s: u64| Requeue::requeue(Duration::from_secs(s));
    assert_eq!(delays[..4], [secs(5), secs(10), secs(20), secs(40)]);
    assert_eq!(delays[7], secs(300));
    let (status, reason, message) = h.condition("fm", "Running").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PodCreationFailed"));
    assert!(message.contains("exceeded quota"), "{message}");
    let warnings = h.fake.keys_under("/apis/events.k8s.io/v1/namespaces/ml/events").len();
    assert_eq!(warnings, 2, "one Created event and one PodCreationFailed, not one per retry");
    // One success resets the backoff.
    h.fake.reject_posts("/nowhere", 422, "");
    let job = Arc::new(h.job("fm"));
    assert!(reconcile(job.clone(), h.ctx.clone()).await.is_ok());
    let error = draco_operator::reconcile::Error::Incomplete("test");
    assert_eq!(error_policy(job, &error, h.ctx.clone()), secs(5));
}

/// A pod named like a child but not labelled as one makes creation conflict; the condition
/// names it.
#[tokio::test]
async fn a_foreign_pod_with_a_childs_name_is_named_in_the_condition() {
    let h = Harness::new(job_json(SPEC)).await;
    h.fake.put(
        &format!("{PODS}/fm-worker-0"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fm-worker-0", "namespace": "ml", "uid": "p-1"},
            "status": {"phase": "Running"}}),
    );
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    *h.ps.lock().unwrap() = Some(ps_status(10, vec![]));
    h.reconcile("fm").await;
    let (_, reason, message) = h.condition("fm", "Running").unwrap();
    assert!(message.contains("fm-worker-0"), "{reason}: {message}");
}

/// The API server does not enforce `format: int32` on custom resources: without explicit
/// bounds it would admit containerPort 2147483648, and then no DracoJob could be listed.
#[test]
fn int32_fields_are_bounded_so_one_job_never_breaks_the_list_of_every_job() {
    let good = job_json(SPEC);
    let mut bad = job_json(&SPEC.replace("name: fm,", "name: other,").replace("uid: job-uid-1", "uid: job-uid-9"));
    bad["spec"]["worker"] =
        json!({"template": {"spec": {"containers": [{"name": "draco", "ports": [{"containerPort": 2147483648u64}]}]}}});
    let schema = draco_api::schema::open_api_schema();
    let port = &schema["properties"]["spec"]["properties"]["worker"]["properties"]["template"]["properties"]["spec"]["properties"]
        ["containers"]["items"]["properties"]["ports"]["items"]["properties"]["containerPort"];
    let list = json!({"apiVersion": "draco.dev/v1alpha1", "kind": "DracoJobList", "metadata": {"resourceVersion": "1"},
        "items": [good, bad]});
    let parsed = serde_json::from_value::<kube::core::ObjectList<DracoJob>>(list);
    assert!(
        port.get("maximum").is_some() || parsed.is_ok(),
        "admitted (containerPort schema {port}), then no DracoJob in the cluster can be listed: {:?}",
        parsed.err()
    );
}

/// A pod template the API server calls invalid (422) would be refused on every retry: the job
/// fails at once with the API's message instead of retrying forever.
#[tokio::test]
async fn an_invalid_pod_template_fails_the_job() {
    let h = Harness::new(job_json(SPEC)).await;
    h.fake.reject_posts(
        PODS,
        422,
        "Pod \"fm-ps\" is invalid: spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
    );
    h.fake.take_log();
    let result = reconcile(Arc::new(h.job("fm")), h.ctx.clone()).await;
    assert!(result.is_ok(), "{:?}", result.err());
    let (status, reason, message) = h.condition("fm", "Failed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PodInvalid"));
    assert!(message.contains("must be less than or equal to cpu limit of 1"), "{message}");
    assert_eq!(h.status("fm")["state"], "Failed");
    // Finished: nothing more is created.
    let writes = h.reconcile("fm").await;
    assert!(!writes.iter().any(|w| w.starts_with("POST")), "{writes:?}");
}

/// A reconcile that runs on a cached job older than the operator's own last status write (the
/// pod-deleted event arrives before the status update) does not undo the restart count.
#[tokio::test]
async fn a_stale_cached_job_never_undoes_the_restart_count() {
    let h = Harness::new(job_json(SPEC)).await;
    h.reconcile("fm").await;
    h.all_pods_running_and_ready("fm", 3);
    h.reconcile("fm").await;
    let stale = h.job("fm");
    assert_eq!(stale.status.as_ref().unwrap().restarts, 0);
    h.set_pod("fm-worker-1", failed_with(137));
    h.reconcile("fm").await;
    assert_eq!(h.status("fm")["restarts"], 1);
    // The restart deleted the pod; the next reconcile still sees restarts = 0 in its cache.
    h.fake.remove(&format!("{PODS}/fm-worker-1"));
    h.fake.take_log();
    reconcile(Arc::new(stale), h.ctx.clone()).await.unwrap();
    assert_eq!(h.status("fm")["restarts"], 1, "the stale cache reset the restart count");
}
