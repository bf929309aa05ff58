//! One reconcile of one DracoJob: observe (pods, the PS's `/status`), ensure the job's
//! objects exist, let `plan` decide, execute its actions, and write the status only when it
//! changed. Errors are retried with backoff by the controller.

use std::sync::Arc;
use std::time::Duration;

use draco_api::DracoJob;
use draco_api::status::condition;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::{self, PodDefaults};
use crate::metrics::OperatorMetrics;
use crate::plan::{self, Action, Observed};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("DracoJob without {0}")]
    Incomplete(&'static str),
}

/// Maps (namespace, job name) to the PS's HTTP address (host:port).
pub type PsAddress = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Everything a reconcile needs besides the job.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    pub pod_defaults: PodDefaults,
    /// The PS's HTTP address (host:port) for a job: its Service's DNS name in a cluster.
    pub ps_address: PsAddress,
    pub now: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Last state seen per job (namespace/name), for `draco_operator_jobs{phase}`.
    pub states: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Context {
    pub fn new(client: Client, pod_defaults: PodDefaults, metrics: Arc<OperatorMetrics>) -> Context {
        let reporter = Reporter { controller: "draco-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            pod_defaults,
            ps_address: Box::new(|namespace, job| {
                format!("{}.{namespace}.svc:{}", children::ps_name(job), children::HTTP_PORT)
            }),
            now: Box::new(Timestamp::now),
            states: Default::default(),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Creates `object` unless it exists (read first: GET is cheap and keeps unchanged jobs
/// write-free). Restores objects someone deleted.
async fn ensure<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), object).await {
        Err(e) if is_conflict(&e) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// The token Secret: created once, never read (the operator has no get/list/watch on Secrets).
/// When one with this name exists, an empty merge patch tells whose it is: ours (a reconcile
/// that died before writing status) is fine; a deleted job's still awaiting garbage collection
/// is waited out, so the new job never gets the old tokens.
async fn ensure_secret(api: &Api<Secret>, job: &DracoJob) -> Result<bool, kube::Error> {
    let tokens: Vec<String> = (0..job.spec.workers).map(|_| draco_core::secret::random_hex(24)).collect();
    let secret = children::token_secret(job, &tokens);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => {
            let existing = api
                .patch(
                    &children::secret_name(job.name()),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({})),
                )
                .await?;
            let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == job.metadata.uid.as_ref());
            Ok(ours)
        }
        Err(e) => Err(e),
    }
}

/// Reconciles one DracoJob.
pub async fn reconcile(job: Arc<DracoJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&job, &ctx).await;
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    result
}

async fn reconcile_inner(job: &DracoJob, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = job.namespace().ok_or(Error::Incomplete("metadata.namespace"))?;
    let name = job.name().to_string();
    if job.metadata.uid.is_none() {
        return Err(Error::Incomplete("metadata.uid"));
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change()); // ownerReferences clean up the children
    }
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let validity = job
        .validate()
        .map_err(|e| e.to_string())
        .and_then(|()| draco_api::schema::validate_cel(job, None).map_err(|errors| errors.join("; ")));
    let status = job.status.clone().unwrap_or_default();
    let finished = status.is_true(condition::SUCCEEDED) || status.is_true(condition::FAILED);

    // The job's objects (never for an invalid or finished job).
    if validity.is_ok() && !finished {
        ensure(&Api::<ConfigMap>::namespaced(client.clone(), &namespace), &children::config_map(job)).await?;
        ensure(&Api::<Service>::namespaced(client.clone(), &namespace), &children::ps_service(job)).await?;
        ensure(&Api::<NetworkPolicy>::namespaced(client.clone(), &namespace), &children::network_policy(job)).await?;
        if !status.is_true(condition::CREATED)
            && !ensure_secret(&Api::<Secret>::namespaced(client.clone(), &namespace), job).await?
        {
            tracing::info!(job = %name, "waiting for the token Secret of a deleted job with this name to go away");
            return Ok(Requeue::requeue(Duration::from_secs(3)));
        }
    }

    let selector = format!("{}={name}", children::LABEL_JOB);
    let observed_pods = pods.list(&ListParams::default().labels(&selector)).await?.items;
    let ps_running = observed_pods.iter().any(|p| {
        p.metadata.name.as_deref() == Some(children::ps_name(&name).as_str())
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    let ps_status = if ps_running && validity.is_ok() {
        crate::ps_status::fetch(&(ctx.ps_address)(&namespace, &name)).await
    } else {
        None
    };

    let decision =
        plan::plan(&Observed { job, pods: &observed_pods, ps_status: ps_status.as_ref(), validity, now: (ctx.now)() });

    let reference = job.object_ref(&());
    for action in &decision.actions {
        match action {
            Action::CreatePod(replica) => {
                let pod = children::pod(job, *replica, &ctx.pod_defaults);
                match pods.create(&PostParams::default(), &pod).await {
                    Err(e) if is_conflict(&e) => {}
                    other => {
                        other?;
                    }
                }
            }
            Action::DeletePod(pod_name) => match pods.delete(pod_name, &DeleteParams::default()).await {
                Err(e) if is_not_found(&e) => {}
                other => {
                    other?;
                }
            },
            Action::Event { warning, reason, note } => {
                let event = Event {
                    type_: if *warning { EventType::Warning } else { EventType::Normal },
                    reason: reason.clone(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                // Events are best effort: a failed event never fails the reconcile.
                if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                    tracing::warn!(job = %name, "event {reason}: {e}");
                }
            }
            Action::DeleteJob => {
                let jobs: Api<DracoJob> = Api::namespaced(client.clone(), &namespace);
                match jobs.delete(&name, &DeleteParams::background()).await {
                    Err(e) if is_not_found(&e) => {}
                    other => {
                        other?;
                    }
                }
                return Ok(Requeue::await_change());
            }
        }
    }

    if job.status.as_ref() != Some(&decision.status) {
        let jobs: Api<DracoJob> = Api::namespaced(client.clone(), &namespace);
        let patch = status_patch(job.status.as_ref(), &decision.status);
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    {
        let mut states = ctx.states.lock().expect("states lock");
        states.insert(format!("{namespace}/{name}"), decision.status.state.clone().unwrap_or_default());
        ctx.metrics.count_jobs(states.values().map(String::as_str));
    }
    Ok(decision.requeue.map_or_else(Requeue::await_change, Requeue::requeue))
}

/// A JSON merge patch that sets `new` and removes the status fields `new` no longer has.
pub fn status_patch(old: Option<&draco_api::DracoJobStatus>, new: &draco_api::DracoJobStatus) -> serde_json::Value {
    let mut body = serde_json::to_value(new).expect("status serializes");
    if let (Some(old), serde_json::Value::Object(map)) = (old, &mut body)
        && let serde_json::Value::Object(old_map) = serde_json::to_value(old).expect("status serializes")
    {
        for key in old_map.keys() {
            map.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": body })
}

/// Backs off a failing reconcile.
pub fn error_policy(job: Arc<DracoJob>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(job = %job.name_any(), "reconcile failed: {error}");
    Requeue::requeue(Duration::from_secs(5))
}

/// Forgets a job that disappeared (for the per-phase gauge).
pub fn forget(ctx: &Context, namespace: &str, name: &str) {
    let mut states = ctx.states.lock().expect("states lock");
    states.remove(&format!("{namespace}/{name}"));
    ctx.metrics.count_jobs(states.values().map(String::as_str));
}
