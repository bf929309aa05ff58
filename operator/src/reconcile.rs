//! One reconcile of one DracoJob: observe (pods, the PS's `/status`), ensure the job's
//! objects exist, let `plan` decide, execute its actions, and write the status only when it
//! changed. Errors are retried with backoff by the controller.

use std::sync::Arc;
use std::time::Duration;

use draco_api::DracoJob;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::{self, PodDefaults};
use crate::metrics::OperatorMetrics;
use crate::plan::{self, Action, Blocked, Observed};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("DracoJob without {0}")]
    Incomplete(&'static str),
    #[error("the API server refused to create {0}")]
    PodRefused(String),
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
    /// Consecutive failed reconciles per job (by UID), for the error backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The restart count last written per job (by UID), never to be undone by a stale cache.
    pub restarts: std::sync::Mutex<std::collections::HashMap<String, i32>>,
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
            failures: Default::default(),
            restarts: Default::default(),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whose an existing object with a child's name is.
#[derive(Debug, PartialEq)]
enum Holder {
    /// Controlled by this job (its UID, not just its name).
    ThisJob,
    /// Controlled by a DracoJob of the same name that was deleted: garbage collection pending.
    DeletedJob,
    /// Anything else: a user's object, another controller's, or no owner at all.
    Other(String),
}

fn holder(job: &DracoJob, meta: &ObjectMeta) -> Holder {
    let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    match controller {
        Some(o) if Some(&o.uid) == job.metadata.uid.as_ref() => Holder::ThisJob,
        Some(o) if o.kind == "DracoJob" && o.name == job.name() => Holder::DeletedJob,
        Some(o) => Holder::Other(format!("it is controlled by {} {}", o.kind, o.name)),
        None => Holder::Other("it has no controller".into()),
    }
}

/// An object the job may use, or why it may not.
enum Ensured<K> {
    Ours(K),
    Blocked(Blocked),
}

/// What stops the job while a child's name is held by `holder`; `None` when it is the job's.
fn blocked_by(kind: &str, name: &str, holder: Holder) -> Option<Blocked> {
    match holder {
        Holder::ThisJob => None,
        Holder::DeletedJob => Some(Blocked {
            reason: "WaitingForOldObjects".into(),
            message: format!(
                "{kind} {name} still belongs to a deleted DracoJob with this name; waiting for its garbage collection"
            ),
        }),
        Holder::Other(why) => Some(Blocked {
            reason: "NameConflict".into(),
            message: format!(
                "{kind} {name} exists and is not this job's ({why}); no pods are created until it is deleted or renamed"
            ),
        }),
    }
}

/// Creates `object` unless it exists (read first: GET is cheap and keeps unchanged jobs
/// write-free); restores objects someone deleted. An existing object counts only when this
/// job (by UID) controls it: another's is never used, the job is blocked with the reason.
async fn ensure<K>(api: &Api<K>, job: &DracoJob, object: &K) -> Result<Ensured<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let existing = match api.get_opt(&name).await? {
        Some(existing) => existing,
        None => match api.create(&PostParams::default(), object).await {
            Ok(created) => return Ok(Ensured::Ours(created)),
            Err(e) if is_conflict(&e) => api.get(&name).await?,
            Err(e) => return Err(e),
        },
    };
    Ok(match blocked_by(&K::kind(&()), &name, holder(job, existing.meta())) {
        Some(blocked) => Ensured::Blocked(blocked),
        None => Ensured::Ours(existing),
    })
}

/// [`ensure`] for objects the operator never changes after creation (Service, NetworkPolicy).
async fn ensure_fixed<K>(api: &Api<K>, job: &DracoJob, object: &K) -> Result<Option<Blocked>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    Ok(match ensure(api, job, object).await? {
        Ensured::Ours(_) => None,
        Ensured::Blocked(blocked) => Some(blocked),
    })
}

/// The job's ConfigMap, brought up to date when an editable field (stragglerTimeoutSeconds)
/// changed; the PS reads it when it (re)starts.
async fn ensure_config(api: &Api<ConfigMap>, job: &DracoJob) -> Result<Option<Blocked>, kube::Error> {
    let desired = children::config_map(job);
    let current = match ensure(api, job, &desired).await? {
        Ensured::Ours(current) => current,
        Ensured::Blocked(blocked) => return Ok(Some(blocked)),
    };
    if current.data != desired.data {
        let name = desired.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "data": desired.data }))).await?;
    }
    Ok(None)
}

/// The token Secret: created once and never read back (the operator may only create Secrets:
/// a get, or a patch's response, would let it read every Secret it can reach). Its name holds
/// the job's UID, so one that exists was created by an earlier reconcile of this very job
/// (that died before writing status) and is used as is.
async fn ensure_secret(api: &Api<Secret>, job: &DracoJob) -> Result<(), kube::Error> {
    let tokens: Vec<String> = (0..job.spec.workers).map(|_| draco_core::secret::random_hex(24)).collect();
    match api.create(&PostParams::default(), &children::token_secret(job, &tokens)).await {
        Err(e) if !is_conflict(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Reconciles one DracoJob.
pub async fn reconcile(job: Arc<DracoJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&job, &ctx).await;
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock").remove(&job_key(&job));
    }
    result
}

async fn reconcile_inner(job: &DracoJob, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = job.namespace().ok_or(Error::Incomplete("metadata.namespace"))?;
    let name = job.name().to_string();
    if job.metadata.uid.is_none() {
        return Err(Error::Incomplete("metadata.uid"));
    }
    if job.metadata.deletion_timestamp.is_some() {
        ctx.failures.lock().expect("failures lock").remove(&job_key(job));
        ctx.restarts.lock().expect("restarts lock").remove(&job_key(job));
        return Ok(Requeue::await_change()); // ownerReferences clean up the children
    }
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let validity = job
        .validate()
        .map_err(|e| e.to_string())
        .and_then(|()| draco_api::schema::validate_cel(job, None).map_err(|errors| errors.join("; ")));
    let status = job.status.clone().unwrap_or_default();
    let finished = status.is_finished();

    // The job's objects (never for an invalid or finished job); the first name held by
    // someone else blocks the job.
    let mut blocked = None;
    if validity.is_ok() && !finished {
        blocked = ensure_config(&Api::namespaced(client.clone(), &namespace), job).await?;
        if blocked.is_none() {
            let services = Api::<Service>::namespaced(client.clone(), &namespace);
            blocked = ensure_fixed(&services, job, &children::ps_service(job)).await?;
        }
        if blocked.is_none() {
            let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace);
            blocked = ensure_fixed(&policies, job, &children::network_policy(job)).await?;
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

    let restarts_written = ctx.restarts.lock().expect("restarts lock").get(&job_key(job)).copied();
    let mut decision = plan::plan(&Observed {
        job,
        pods: &observed_pods,
        ps_status: ps_status.as_ref(),
        validity,
        blocked,
        restarts_written,
        now: (ctx.now)(),
    });

    let reference = job.object_ref(&());
    // Pods that could not be created: the job's status says why (never an empty status).
    let mut refused = Vec::new();
    let mut invalid = Vec::new();
    let mut taken = Vec::new();
    // The pods mount the token Secret: made sure of before the first pod of any reconcile, so
    // one deleted by someone comes back with the next restart.
    if decision.actions.iter().any(|a| matches!(a, Action::CreatePod(_))) {
        ensure_secret(&Api::namespaced(client.clone(), &namespace), job).await?;
    }
    for action in &decision.actions {
        match action {
            Action::CreatePod(replica) => {
                let pod = children::pod(job, *replica, &ctx.pod_defaults);
                let pod_name = children::pod_name(&name, *replica);
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => {}
                    // Not among the pods labelled as this job's, yet the name exists.
                    Err(e) if is_conflict(&e) => taken.push(pod_name),
                    // The pod template itself is invalid: every retry would be refused alike.
                    Err(kube::Error::Api(e)) if e.code == 422 => invalid.push(format!("pod {pod_name}: {}", e.message)),
                    // Refused for now (quota, a webhook): retried with backoff. 429 (throttled)
                    // and 5xx take the ordinary error path below.
                    Err(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 429 => {
                        refused.push(format!("pod {pod_name}: {}", e.message))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Action::DeletePod(pod_name) => match pods.delete(pod_name, &DeleteParams::default()).await {
                Err(e) if is_not_found(&e) => {}
                other => {
                    other?;
                }
            },
            Action::Event { warning, reason, note } => publish(ctx, &reference, *warning, reason, note).await,
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

    if !invalid.is_empty() && !decision.status.is_finished() {
        let message = format!("the API server refused the pod template as invalid: {}", invalid.join("; "));
        plan::conclude(&mut decision.status, false, "PodInvalid", &message, (ctx.now)());
        publish(ctx, &reference, true, "PodInvalid", &message).await;
    }
    let problem = if decision.status.is_finished() {
        None
    } else if !refused.is_empty() {
        Some(("PodCreationFailed", format!("the API server refused {}", refused.join("; "))))
    } else if !taken.is_empty() {
        Some((
            "PodNameTaken",
            format!(
                "{} already exist(s) and are not this job's (not labelled {}={name}): delete or rename them",
                taken.join(", "),
                children::LABEL_JOB
            ),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = &problem
        && plan::hold(&mut decision.status, &status, reason, message, (ctx.now)())
    {
        publish(ctx, &reference, true, reason, message).await;
    }

    if job.status.as_ref() != Some(&decision.status) {
        let jobs: Api<DracoJob> = Api::namespaced(client.clone(), &namespace);
        let patch = status_patch(job.status.as_ref(), &decision.status);
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        ctx.restarts.lock().expect("restarts lock").insert(job_key(job), decision.status.restarts);
    }
    if !refused.is_empty() {
        return Err(Error::PodRefused(refused.join("; ")));
    }
    Ok(decision.requeue.map_or_else(Requeue::await_change, Requeue::requeue))
}

/// The longest event note the API server accepts (events.k8s.io/v1: 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// Publishes an event about the job. Events are best effort: a failed event never fails the
/// reconcile.
async fn publish(ctx: &Context, reference: &ObjectReference, warning: bool, reason: &str, note: &str) {
    let mut end = note.len().min(MAX_NOTE_BYTES);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note[..end].to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(reason, "event: {e}");
    }
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

/// The first retry of a failed reconcile; each further failure doubles it, up to the cap.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// By UID: a job re-created under the same name starts without the old one's backoff.
fn job_key(job: &DracoJob) -> String {
    job.uid().unwrap_or_else(|| format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()))
}

/// Backs off a failing reconcile exponentially (5 s, 10 s, ... 5 min), per job: a job the
/// API server keeps refusing does not hammer it, and one success resets the delay.
pub fn error_policy(job: Arc<DracoJob>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let mut failures = ctx.failures.lock().expect("failures lock");
    let count = failures.entry(job_key(&job)).or_insert(0);
    *count = count.saturating_add(1);
    let delay = FIRST_RETRY.saturating_mul(1 << (*count - 1).min(16)).min(MAX_RETRY);
    tracing::warn!(job = %job.name_any(), failures = *count, retry_in = ?delay, "reconcile failed: {error}");
    Requeue::requeue(delay)
}
