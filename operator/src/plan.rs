//! The operator's decisions as one pure function: from what it observed (the job, its pods, the
//! PS's `/status`, the time) to the status the job should show and the actions to take. No API
//! calls here, so every transition (restarts, exit codes, backoff, suspend, deadlines, TTL,
//! clean-up, Byzantine detections) is unit-testable; `reconcile` only executes the plan.

use std::time::Duration;

use draco_api::status::{
    ByzantineStatus, DracoJobStatus, ReplicaStatus, ReplicaStatuses, SuspectStatus, TrainingStatus, condition,
};
use draco_api::{CleanPodPolicy, DracoJob, RestartPolicy};
use draco_core::status::Status as PsStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::children::{self, Replica};

/// What the operator saw in one reconcile.
pub struct Observed<'a> {
    pub job: &'a DracoJob,
    /// Pods labelled with this job's name, whoever owns them.
    pub pods: &'a [Pod],
    /// The PS's `/status`, when it answered.
    pub ps_status: Option<&'a PsStatus>,
    /// The Rust and CEL validation verdict on the spec.
    pub validity: Result<(), String>,
    /// Why the job's own objects (ConfigMap, Service, NetworkPolicy, token Secret) are not
    /// usable yet, when one of their names is taken; no pods are created until it clears.
    pub blocked: Option<Blocked>,
    /// The restart count this operator last wrote: the controller's cache can lag behind it
    /// (a pod event reconciles before the watch delivers the write), and the count never goes
    /// back, or backoffLimit would never be reached.
    pub restarts_written: Option<i32>,
    pub now: Timestamp,
}

/// A child object's name held by someone else.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// `WaitingForOldObjects` (a deleted job's, garbage collection pending) or `NameConflict`.
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreatePod(Replica),
    DeletePod(String),
    Event {
        warning: bool,
        reason: String,
        note: String,
    },
    /// ttlSecondsAfterFinished elapsed.
    DeleteJob,
}

#[derive(Debug)]
pub struct Plan {
    pub status: DracoJobStatus,
    pub actions: Vec<Action>,
    /// Look again after this long even without a watch event (PS progress, deadlines, TTL).
    pub requeue: Option<Duration>,
}

/// While a job runs, the PS's progress is polled this often.
pub const POLL: Duration = Duration::from_secs(10);

/// The longest wait before the next look at a job: timers far in the future are re-armed
/// from a fresh observation (and stay well inside what the controller's timer supports).
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

fn time(now: Timestamp) -> Time {
    Time(now)
}

/// `start` plus `seconds` (negative counts as 0); `None` past the representable timestamps.
pub fn after(start: Timestamp, seconds: i64) -> Option<Timestamp> {
    start.checked_add(SignedDuration::from_secs(seconds.max(0))).ok()
}

/// How long from `now` until `then` (> now), at most [`MAX_REQUEUE`].
fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).map_or(POLL, |d| d.min(MAX_REQUEUE))
}

/// Sets a condition; `lastTransitionTime` moves only when the status flips, so an unchanged
/// state produces an identical status (and no write).
pub fn set_condition(
    status: &mut DracoJobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = time(now);
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: time(now),
            observed_generation: None,
        }),
    }
}

/// The word `kubectl get dj` shows.
fn state_of(status: &DracoJobStatus) -> &'static str {
    use condition::*;
    [
        (FAILED, "Failed"),
        (SUCCEEDED, "Succeeded"),
        (SUSPENDED, "Suspended"),
        (RESTARTING, "Restarting"),
        (RUNNING, "Running"),
        (CREATED, "Created"),
    ]
    .into_iter()
    .find(|(c, _)| status.is_true(c))
    .map_or("Pending", |(_, word)| word)
}

fn is_owned(job: &DracoJob, pod: &Pod) -> bool {
    let uid = job.metadata.uid.as_deref();
    pod.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The exit code of the `draco` container (or the first terminated one).
pub fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let terminated = |name: Option<&str>| {
        statuses
            .iter()
            .filter(|s| name.is_none_or(|n| s.name == n))
            .find_map(|s| s.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
    };
    terminated(Some(children::CONTAINER)).or_else(|| terminated(None))
}

/// Why a pending pod does not start, when the scheduler says so.
fn unschedulable(pod: &Pod) -> Option<String> {
    let c =
        pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| c.message.clone().unwrap_or_default())
}

/// Why a scheduled pod's container cannot start, when the kubelet says so (a missing Secret
/// key or ConfigMap, an image that cannot be pulled): it would otherwise wait silently.
fn cannot_start(pod: &Pod) -> Option<String> {
    const REASONS: [&str; 5] =
        ["CreateContainerConfigError", "CreateContainerError", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"];
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref().filter(|r| REASONS.contains(r))?;
        Some(match waiting.message.as_deref() {
            Some(message) if !message.is_empty() => format!("{reason}: {message}"),
            _ => reason.to_string(),
        })
    })
}

/// Whether Kubernetes itself took the pod away (eviction, preemption, node pressure or
/// shutdown): its exit code then says nothing about the program.
pub fn disrupted(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    status.reason.as_deref().is_some_and(|r| matches!(r, "Evicted" | "Preempting" | "Terminated" | "Shutdown"))
        || status.conditions.iter().flatten().any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
}

/// Whether a failed pod may be restarted, per the replica's restartPolicy (Kubeflow semantics).
pub fn retryable(policy: RestartPolicy, exit_code: Option<i32>, disrupted: bool) -> bool {
    match policy {
        RestartPolicy::Always | RestartPolicy::OnFailure => true,
        RestartPolicy::Never => false,
        // 1-127: the program said no (bad config, a bug); 128+: killed by a signal (OOM, node
        // loss, preemption). No exit code at all (eviction before start) is retryable too, and
        // so is any pod Kubernetes disrupted, whatever it exited with.
        RestartPolicy::ExitCode => disrupted || !matches!(exit_code, Some(1..=127)),
    }
}

fn restart_policy(job: &DracoJob, replica: Replica) -> RestartPolicy {
    let spec = match replica {
        Replica::Ps => job.spec.ps.as_ref(),
        Replica::Worker(_) => job.spec.worker.as_ref(),
    };
    spec.and_then(|s| s.restart_policy).unwrap_or_default()
}

/// Pods to delete when the job finished, per cleanPodPolicy.
fn clean_up(job: &DracoJob, pods: &[&Pod], actions: &mut Vec<Action>) {
    let policy = job.spec.run_policy().clean_pod_policy();
    for pod in pods {
        let active = matches!(phase(pod), "Pending" | "Running");
        let delete = match policy {
            CleanPodPolicy::All => true,
            CleanPodPolicy::Running => active,
            CleanPodPolicy::None => false,
        };
        if delete && pod.metadata.deletion_timestamp.is_none() {
            actions.push(Action::DeletePod(pod.metadata.name.clone().unwrap_or_default()));
        }
    }
}

fn event(actions: &mut Vec<Action>, warning: bool, reason: &str, note: String) {
    actions.push(Action::Event { warning, reason: reason.into(), note });
}

/// Ends the job (Succeeded or Failed): the condition, the completion time, an event, clean-up.
fn finish(plan: &mut Plan, obs: &Observed, owned: &[&Pod], succeeded: bool, reason: &str, message: String) {
    let now = obs.now;
    // Replicas planned earlier in this reconcile are not started for a finished job.
    plan.actions.retain(|a| !matches!(a, Action::CreatePod(_)));
    conclude(&mut plan.status, succeeded, reason, &message, now);
    event(&mut plan.actions, !succeeded, reason, message);
    clean_up(obs.job, owned, &mut plan.actions);
}

/// The terminal status: Succeeded or Failed, not Running or Restarting, the completion time.
/// (The next reconcile of a finished job cleans its pods up per cleanPodPolicy.)
pub fn conclude(status: &mut DracoJobStatus, succeeded: bool, reason: &str, message: &str, now: Timestamp) {
    let type_ = if succeeded { condition::SUCCEEDED } else { condition::FAILED };
    set_condition(status, type_, true, reason, message, now);
    set_condition(status, condition::RUNNING, false, reason, message, now);
    if status.is_true(condition::RESTARTING) {
        set_condition(status, condition::RESTARTING, false, reason, message, now);
    }
    status.completion_time.get_or_insert(time(now));
    status.state = Some(state_of(status).to_string());
}

/// Decides the job's status and the actions for one reconcile.
pub fn plan(obs: &Observed) -> Plan {
    let job = obs.job;
    let now = obs.now;
    let old = job.status.clone().unwrap_or_default();
    let mut plan = Plan { status: old.clone(), actions: Vec::new(), requeue: None };
    plan.status.restarts = plan.status.restarts.max(obs.restarts_written.unwrap_or(0));
    plan.status.observed_generation = job.metadata.generation;
    let owned: Vec<&Pod> = obs.pods.iter().filter(|p| is_owned(job, p)).collect();
    let finished = old.is_finished();

    // An invalid spec (defense in depth behind the CRD's CEL rules) never gets pods.
    if let Err(message) = &obs.validity
        && !finished
    {
        let message = format!("invalid spec: {message}");
        finish(&mut plan, obs, &owned, false, "InvalidSpec", message);
        return done(plan, obs);
    }

    if finished {
        clean_up(job, &owned, &mut plan.actions);
        if let (Some(ttl), Some(done_at)) =
            (job.spec.run_policy().ttl_seconds_after_finished, old.completion_time.as_ref().map(|t| t.0))
        {
            // An expiry past the end of time (a TTL above the validated bound, from an older
            // CRD) never comes: the job is kept, nothing panics.
            if let Some(expires) = after(done_at, i64::from(ttl)) {
                if now >= expires {
                    plan.actions.push(Action::DeleteJob);
                } else {
                    plan.requeue = Some(until(now, expires));
                }
            }
        }
        return done(plan, obs);
    }

    // A child's name held by another object before the job's objects exist: nothing starts
    // until it clears, and the job says why. (Later, see the end: the job goes on without new pods.)
    if let Some(blocked) = &obs.blocked
        && !old.is_true(condition::CREATED)
    {
        report_blocked(&mut plan, &old, blocked, now);
        return done(plan, obs);
    }

    if !old.is_true(condition::CREATED) {
        let message = format!("created the PS and {} workers' objects", job.spec.workers);
        set_condition(&mut plan.status, condition::CREATED, true, "JobCreated", &message, now);
        event(&mut plan.actions, false, "Created", message);
    }

    // Suspend: no pods, the job and its checkpoint volume stay; resume restarts from it.
    if job.spec.run_policy().suspended() {
        for pod in &owned {
            if pod.metadata.deletion_timestamp.is_none() {
                plan.actions.push(Action::DeletePod(pod.metadata.name.clone().unwrap_or_default()));
            }
        }
        // The deleted pods are no longer active or ready, even while they terminate.
        plan.status.replica_statuses = Some(ReplicaStatuses::default());
        plan.status.workers_ready = Some(format!("0/{}", job.spec.workers));
        if !old.is_true(condition::SUSPENDED) {
            let message = if children::has_persistent_checkpoints(job) {
                "runPolicy.suspend is true: pods removed; resuming restarts the PS from its latest checkpoint"
                    .to_string()
            } else {
                format!(
                    "runPolicy.suspend is true: pods removed; the PS's checkpoints were in an emptyDir, so resuming \
                     restarts training from step 0 (give spec.ps.template a volume named `{}`, e.g. a PVC, to keep them)",
                    children::CHECKPOINT_VOLUME
                )
            };
            set_condition(&mut plan.status, condition::SUSPENDED, true, "JobSuspended", &message, now);
            set_condition(&mut plan.status, condition::RUNNING, false, "JobSuspended", &message, now);
            event(&mut plan.actions, false, "Suspended", message);
        }
        // activeDeadlineSeconds counts running time only.
        plan.status.start_time = None;
        return done(plan, obs);
    }
    if old.is_true(condition::SUSPENDED) {
        let message = "runPolicy.suspend is false: pods recreated; the PS resumes from its latest checkpoint";
        set_condition(&mut plan.status, condition::SUSPENDED, false, "JobResumed", message, now);
        event(&mut plan.actions, false, "Resumed", message.to_string());
    }
    let started = plan.status.start_time.get_or_insert(time(now)).0;

    // A deadline past the end of time (above the validated bound, from an older CRD) is no
    // deadline: checked arithmetic, never a panic.
    if let Some(deadline) = job.spec.run_policy().active_deadline_seconds
        && let Some(expires) = after(started, deadline)
    {
        if now >= expires {
            let message = format!("ran longer than runPolicy.activeDeadlineSeconds ({deadline} s)");
            finish(&mut plan, obs, &owned, false, "DeadlineExceeded", message);
            return done(plan, obs);
        }
        plan.requeue = Some(until(now, expires));
    }

    // The replicas: create what is missing, judge what failed.
    let backoff_limit = job.spec.run_policy().backoff_limit();
    let mut counts = ReplicaStatuses::default();
    let mut waiting_for_old = Vec::new();
    let mut unschedulable_pods = Vec::new();
    let mut stuck_pods = Vec::new();
    let mut all_ready = true;
    for replica in children::replicas(job) {
        let name = children::pod_name(job.name(), replica);
        let tally: &mut ReplicaStatus = match replica {
            Replica::Ps => &mut counts.ps,
            Replica::Worker(_) => &mut counts.worker,
        };
        let Some(pod) = owned.iter().find(|p| p.metadata.name.as_deref() == Some(name.as_str())) else {
            all_ready = false;
            // A pod of a deleted job with the same name is never adopted: wait until it is gone.
            if obs.pods.iter().any(|p| p.metadata.name.as_deref() == Some(name.as_str())) {
                waiting_for_old.push(name);
            } else {
                plan.actions.push(Action::CreatePod(replica));
            }
            continue;
        };
        match phase(pod) {
            "Succeeded" => {
                tally.succeeded += 1;
                if replica == Replica::Ps {
                    let accuracy = obs
                        .ps_status
                        .and_then(|s| s.test_accuracy)
                        .or(old.training.as_ref().and_then(|t| t.test_accuracy.map(|a| a as f32)));
                    let message = match accuracy {
                        Some(a) => format!("the PS finished every step; test accuracy {:.2}%", a * 100.0),
                        None => "the PS finished every step".to_string(),
                    };
                    absorb_ps_status(&mut plan, obs);
                    plan.status.replica_statuses = Some(counts.clone());
                    finish(&mut plan, obs, &owned, true, "JobSucceeded", message);
                    return done(plan, obs);
                }
            }
            // A pod being deleted (by a restart, a suspend, a drain) decides nothing: it is
            // recreated once gone.
            _ if pod.metadata.deletion_timestamp.is_some() => all_ready = false,
            "Failed" => {
                tally.failed += 1;
                all_ready = false;
                let code = exit_code(pod);
                let policy = restart_policy(job, replica);
                let shown = code.map_or("no exit code".to_string(), |c| format!("exit code {c}"));
                let kind = if replica == Replica::Ps { "PS" } else { "Worker" };
                if !retryable(policy, code, disrupted(pod)) {
                    let message = format!("pod {name} failed with {shown}: permanent under restartPolicy {policy:?}");
                    finish(&mut plan, obs, &owned, false, &format!("{kind}Failed"), message);
                    return done(plan, obs);
                }
                if plan.status.restarts >= backoff_limit {
                    let message = format!(
                        "pod {name} failed with {shown} after {} restarts: runPolicy.backoffLimit {backoff_limit} exhausted",
                        plan.status.restarts
                    );
                    finish(&mut plan, obs, &owned, false, "BackoffLimitExceeded", message);
                    return done(plan, obs);
                }
                plan.status.restarts = plan.status.restarts.saturating_add(1);
                let message =
                    format!("pod {name} failed with {shown}; restart {} of {backoff_limit}", plan.status.restarts);
                set_condition(
                    &mut plan.status,
                    condition::RESTARTING,
                    true,
                    &format!("{kind}Restarting"),
                    &message,
                    now,
                );
                event(&mut plan.actions, true, "Restarting", message);
                plan.actions.push(Action::DeletePod(name));
            }
            running_or_pending => {
                tally.active += 1;
                if is_ready(pod) {
                    tally.ready += 1;
                } else {
                    all_ready = false;
                }
                if running_or_pending == "Pending"
                    && let Some(why) = unschedulable(pod)
                {
                    unschedulable_pods.push(format!("{name}: {why}"));
                }
                if let Some(why) = cannot_start(pod) {
                    stuck_pods.push(format!("{name}: {why}"));
                }
            }
        }
    }
    // Workers that finished their part count as ready for the job's purposes.
    let workers_ok = counts.worker.ready + counts.worker.succeeded;
    plan.status.workers_ready = Some(format!("{workers_ok}/{}", job.spec.workers));
    plan.status.replica_statuses = Some(counts.clone());
    absorb_ps_status(&mut plan, obs);

    let decoded = plan.status.training.as_ref().is_some_and(|t| t.decoded_steps > 0);
    let ps_ready = counts.ps.ready == 1;
    if ps_ready && all_ready && decoded {
        set_condition(
            &mut plan.status,
            condition::RUNNING,
            true,
            "JobRunning",
            "the PS and every worker are ready and steps are being decoded",
            now,
        );
        if plan.status.is_true(condition::RESTARTING) {
            set_condition(&mut plan.status, condition::RESTARTING, false, "JobRunning", "every pod is back", now);
        }
    } else {
        let (reason, message) = if !waiting_for_old.is_empty() {
            (
                "WaitingForOldPods",
                format!("pods of a deleted DracoJob with this name still exist: {}", waiting_for_old.join(", ")),
            )
        } else if !unschedulable_pods.is_empty() {
            ("Unschedulable", unschedulable_pods.join("; "))
        } else if !stuck_pods.is_empty() {
            ("PodsCannotStart", stuck_pods.join("; "))
        } else if !(ps_ready && all_ready) {
            ("PodsNotReady", format!("PS ready: {ps_ready}; workers ready: {workers_ok}/{}", job.spec.workers))
        } else {
            ("WaitingForFirstStep", "every pod is ready; no step decoded yet".to_string())
        };
        set_condition(&mut plan.status, condition::RUNNING, false, reason, &message, now);
        if !waiting_for_old.is_empty() {
            plan.requeue = Some(Duration::from_secs(5));
        }
    }
    plan.requeue = Some(plan.requeue.map_or(POLL, |r| r.min(POLL)));
    // A child's name taken over while the job runs (a Service recreated by another tool): the
    // job's pods are still judged, suspended and timed out, but none is created.
    if let Some(blocked) = &obs.blocked {
        plan.actions.retain(|a| !matches!(a, Action::CreatePod(_)));
        report_blocked(&mut plan, &old, blocked, now);
    }
    done(plan, obs)
}

/// Running=False with the blocking reason, an event when the reason is new, a look again soon.
fn report_blocked(plan: &mut Plan, old: &DracoJobStatus, blocked: &Blocked, now: Timestamp) {
    if hold(&mut plan.status, old, &blocked.reason, &blocked.message, now) {
        event(&mut plan.actions, true, &blocked.reason, blocked.message.clone());
    }
    plan.requeue = Some(plan.requeue.map_or(Duration::from_secs(5), |r| r.min(Duration::from_secs(5))));
}

/// Sets Running=False for `reason`; true when `old` did not already say so, i.e. when the
/// caller should emit an event. One event per reason, not per message: messages carry names
/// and numbers that change (a quota's usage, which object is still held).
pub fn hold(status: &mut DracoJobStatus, old: &DracoJobStatus, reason: &str, message: &str, now: Timestamp) -> bool {
    set_condition(status, condition::RUNNING, false, reason, message, now);
    !old.condition(condition::RUNNING).is_some_and(|c| c.status == "False" && c.reason == reason)
}

/// Folds the PS's `/status` into training progress and the suspects table; names new suspects
/// in events; raises ByzantineDetected and DecodeCapacityExceeded.
fn absorb_ps_status(plan: &mut Plan, obs: &Observed) {
    let Some(ps) = obs.ps_status else { return };
    let now = obs.now;
    let job = obs.job;
    let old_training = plan.status.training.clone().unwrap_or_default();
    let step = ps.step as i64;
    plan.status.training = Some(TrainingStatus {
        step,
        total_steps: ps.total_steps as i64,
        loss: ps.loss.map(f64::from),
        test_accuracy: ps.test_accuracy.map(f64::from),
        steps_per_second: Some((ps.steps_per_second * 100.0).round() / 100.0),
        decoded_steps: ps.decoded_steps as i64,
        undecodable_steps: ps.undecodable_steps.saturating_add(ps.bound_violated_steps) as i64,
        params_digest: Some(ps.params_digest.clone()),
        last_update_time: if step != old_training.step || old_training.last_update_time.is_none() {
            Some(time(now))
        } else {
            old_training.last_update_time
        },
    });
    let old_suspects = plan.status.byzantine.as_ref().map(|b| b.suspects.clone()).unwrap_or_default();
    let suspects: Vec<SuspectStatus> = ps
        .suspects
        .iter()
        .map(|s| SuspectStatus {
            worker: s.worker as i32,
            count: s.count as i64,
            first_step: s.first_step as i64,
            last_step: s.last_step as i64,
            reason: s.reason.clone(),
        })
        .collect();
    for s in &suspects {
        if !old_suspects.iter().any(|o| o.worker == s.worker && o.reason == s.reason) {
            let pod = children::worker_name(job.name(), s.worker as usize);
            event(
                &mut plan.actions,
                true,
                "ByzantineWorker",
                format!(
                    "worker {} (pod {pod}) sent a wrong coded gradient at step {} ({}); DRACO decoded the exact gradient without it",
                    s.worker, s.first_step, s.reason
                ),
            );
        }
    }
    let mut workers: Vec<i32> = suspects.iter().map(|s| s.worker).collect();
    workers.dedup();
    let detections = ps.detections_total as i64;
    if detections > 0 {
        let message = format!(
            "workers {workers:?} named {detections} times; every decoded step is exact (see status.byzantine.suspects)"
        );
        set_condition(&mut plan.status, condition::BYZANTINE_DETECTED, true, "WrongGradients", &message, now);
    }
    plan.status.byzantine =
        Some(ByzantineStatus { detections_total: detections, suspected_workers: workers.len() as i32, suspects });
    let undecodable = ps.undecodable_steps.saturating_add(ps.bound_violated_steps);
    if undecodable > 0 {
        let message = format!(
            "{undecodable} steps had more liars or missing workers than 2s + e <= r - 1 allows (s = {}, e = {}, r = {})",
            job.spec.byzantine_tolerance, job.spec.straggler_tolerance, job.spec.redundancy
        );
        if !plan.status.is_true(condition::DECODE_CAPACITY_EXCEEDED) {
            event(&mut plan.actions, true, "DecodeCapacityExceeded", message.clone());
        }
        set_condition(&mut plan.status, condition::DECODE_CAPACITY_EXCEEDED, true, "UndecodableSteps", &message, now);
    }
}

fn done(mut plan: Plan, _obs: &Observed) -> Plan {
    plan.status.state = Some(state_of(&plan.status).to_string());
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SPEC: &str = "
apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: fm, namespace: ml, uid: uid-1, generation: 1}
spec:
  workers: 3
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  model: {architecture: mlp, hidden: [16]}
  dataset: {format: synthetic}
  training: {steps: 100, batchSize: 30, optimizer: {type: sgd, learningRate: 0.05}}
";

    fn now() -> Timestamp {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }

    /// The example job with `edit` applied to its JSON form.
    fn job(edit: impl FnOnce(&mut Value)) -> DracoJob {
        let mut v: Value = serde_saphyr::from_str(SPEC).unwrap();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    /// A pod of `job` as the operator creates it, with `status`.
    fn pod(job: &DracoJob, replica: Replica, status: Value) -> Pod {
        let defaults = children::PodDefaults { image: "draco:test".into(), image_pull_policy: None };
        let mut v = serde_json::to_value(children::pod(job, replica, &defaults)).unwrap();
        v["status"] = status;
        serde_json::from_value(v).unwrap()
    }

    fn all_pods(job: &DracoJob, status: Value) -> Vec<Pod> {
        children::replicas(job).into_iter().map(|r| pod(job, r, status.clone())).collect()
    }

    fn run(job: &DracoJob, pods: &[Pod], at: Timestamp) -> Plan {
        run_blocked(job, pods, at, None)
    }

    fn run_blocked(job: &DracoJob, pods: &[Pod], at: Timestamp, blocked: Option<Blocked>) -> Plan {
        plan(&Observed { job, pods, ps_status: None, validity: Ok(()), blocked, restarts_written: None, now: at })
    }

    /// `job` with the status a plan produced, as the next reconcile sees it.
    fn with_status(job: &DracoJob, status: &DracoJobStatus) -> DracoJob {
        let mut next = job.clone();
        next.status = Some(status.clone());
        next
    }

    fn running() -> Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    }

    #[test]
    fn an_active_deadline_past_the_end_of_time_is_no_deadline_and_no_panic() {
        for deadline in [i64::MAX, 250_000_000_000, 1 << 62] {
            let j = job(|v| v["spec"]["runPolicy"] = json!({"activeDeadlineSeconds": deadline}));
            let first = run(&j, &[], now());
            let j = with_status(&j, &first.status);
            let later = run(&j, &all_pods(&j, running()), now().checked_add(SignedDuration::from_hours(1)).unwrap());
            assert!(!later.status.is_true(condition::FAILED), "deadline {deadline}");
            assert!(later.requeue.is_some_and(|r| r <= POLL));
        }
    }

    #[test]
    fn a_ttl_past_the_end_of_time_keeps_the_job_and_never_panics() {
        let j = job(|v| v["spec"]["runPolicy"] = json!({"ttlSecondsAfterFinished": i32::MAX}));
        let mut status = DracoJobStatus::default();
        set_condition(&mut status, condition::SUCCEEDED, true, "JobSucceeded", "done", now());
        // A completion time near the end of jiff's range: adding the TTL overflows.
        status.completion_time = Some(Time(Timestamp::MAX.checked_sub(SignedDuration::from_secs(10)).unwrap()));
        let p = run(&with_status(&j, &status), &[], Timestamp::MAX);
        assert!(!p.actions.contains(&Action::DeleteJob), "{:?}", p.actions);
    }

    #[test]
    fn a_long_ttl_is_waited_for_in_bounded_requeues() {
        let j = job(|v| v["spec"]["runPolicy"] = json!({"ttlSecondsAfterFinished": 31_536_000}));
        let mut status = DracoJobStatus::default();
        set_condition(&mut status, condition::SUCCEEDED, true, "JobSucceeded", "done", now());
        status.completion_time = Some(Time(now()));
        let p = run(&with_status(&j, &status), &[], now());
        assert_eq!(p.requeue, Some(MAX_REQUEUE));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    /// A suspended job shows 0 ready workers and no active pods, even while its pods terminate.
    #[test]
    fn a_suspended_job_reports_no_active_or_ready_pods() {
        let j = job(|_| {});
        let first = run(&j, &[], now());
        let j = with_status(&j, &first.status);
        let up = run(&j, &all_pods(&j, running()), now());
        assert_eq!(up.status.workers_ready.as_deref(), Some("3/3"));
        let mut suspended = with_status(&j, &up.status);
        suspended.spec.run_policy = Some(draco_api::RunPolicy { suspend: Some(true), ..Default::default() });
        let deleting = run(&suspended, &all_pods(&suspended, running()), now());
        assert!(deleting.status.is_true(condition::SUSPENDED));
        // No checkpoint volume in the PS template: the user is told what resuming means.
        let message = &deleting.status.condition(condition::SUSPENDED).unwrap().message;
        assert!(message.contains("from step 0") && message.contains("`checkpoints`"), "{message}");
        // The pods are gone now.
        let suspended = with_status(&suspended, &deleting.status);
        let later = run(&suspended, &[], now());
        assert_eq!(
            later.status.workers_ready.as_deref(),
            Some("0/3"),
            "kubectl get dj shows ready workers that do not exist"
        );
        assert_eq!(later.status.replica_statuses.as_ref().map(|r| (r.ps.active, r.worker.active)), Some((0, 0)));
    }

    /// Resuming while the pods the suspend deleted still terminate (worker-0 exited 143 on the
    /// SIGTERM) does not fail the job: a pod being deleted decides nothing.
    #[test]
    fn resuming_while_the_suspended_pods_terminate_does_not_fail_the_job() {
        let j = job(|v| v["spec"]["worker"] = json!({"restartPolicy": "Never"}));
        let first = run(&j, &[], now());
        let j = with_status(&j, &first.status);
        let up = run(&j, &all_pods(&j, running()), now());
        let mut suspended = with_status(&j, &up.status);
        suspended.spec.run_policy = Some(draco_api::RunPolicy { suspend: Some(true), ..Default::default() });
        let deleting = run(&suspended, &all_pods(&suspended, running()), now());
        assert!(deleting.actions.iter().filter(|a| matches!(a, Action::DeletePod(_))).count() == 4);
        // suspend: false again a few seconds later. worker-0 got SIGTERM from the suspend, exited
        // (143; the draco binary even exits 1) and is Failed, still terminating.
        let resumed = with_status(&j, &deleting.status);
        let mut pods = all_pods(&resumed, running());
        for p in &mut pods {
            p.metadata.deletion_timestamp = Some(time(now()));
        }
        pods[1] = {
            let mut p = pod(
                &resumed,
                Replica::Worker(0),
                json!({"phase": "Failed", "containerStatuses": [{"name": "draco", "ready": false, "restartCount": 0,
                    "image": "draco:test", "imageID": "", "state": {"terminated": {"exitCode": 143}}}]}),
            );
            p.metadata.deletion_timestamp = Some(time(now()));
            p
        };
        let p = run(&resumed, &pods, now().checked_add(SignedDuration::from_secs(5)).unwrap());
        assert!(
            !p.status.is_true(condition::FAILED),
            "the job failed because of a pod the operator itself deleted: {:?}",
            p.status.condition(condition::FAILED)
        );
    }

    /// An evicted worker (DisruptionTarget) is retried under restartPolicy ExitCode, whatever it
    /// exited with.
    #[test]
    fn an_evicted_worker_is_retryable_under_exit_code() {
        let j = job(|v| v["spec"]["worker"] = json!({"restartPolicy": "ExitCode"}));
        let first = run(&j, &[], now());
        let j = with_status(&j, &first.status);
        let failed_with = |code: i32, disruption: Value| {
            let mut status = json!({"phase": "Failed",
                "containerStatuses": [{"name": "draco", "ready": false, "restartCount": 0, "image": "draco:test",
                    "imageID": "", "state": {"terminated": {"exitCode": code}}}]});
            if let (Value::Object(s), Value::Object(d)) = (&mut status, disruption) {
                s.extend(d);
            }
            pod(&j, Replica::Worker(1), status)
        };
        let disruption =
            json!({"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]});
        // Drained: the pod is being deleted; evicted by the kubelet: Failed, reason Evicted, not
        // deleted; preempted: DisruptionTarget. Exit code 1 in every case.
        let mut drained = failed_with(1, disruption.clone());
        drained.metadata.deletion_timestamp = Some(time(now()));
        let cases = [
            ("drained", drained),
            ("evicted by the kubelet", failed_with(1, json!({"reason": "Evicted"}))),
            ("preempted", failed_with(1, disruption)),
        ];
        for (what, evicted) in cases {
            let mut pods = all_pods(&j, running());
            pods[2] = evicted;
            let p = run(&j, &pods, now());
            assert!(!p.status.is_true(condition::FAILED), "{what}: {:?}", p.status.condition(condition::FAILED));
        }
        // The same exit code without a disruption is the program's own verdict: permanent.
        let mut pods = all_pods(&j, running());
        pods[2] = failed_with(1, json!({}));
        assert!(run(&j, &pods, now()).status.is_true(condition::FAILED));
    }

    #[test]
    fn a_job_that_fails_starts_no_replica_in_the_same_reconcile() {
        let j = job(|v| v["spec"]["worker"] = json!({"restartPolicy": "ExitCode"}));
        let j = with_status(&j, &run(&j, &[], now()).status);
        let mut pods = all_pods(&j, running());
        // worker-0 is gone (evicted and deleted); worker-1 exited 1: the program's own verdict.
        pods[2] = pod(
            &j,
            Replica::Worker(1),
            json!({"phase": "Failed", "containerStatuses": [{"name": "draco", "ready": false, "restartCount": 0,
                "image": "draco:test", "imageID": "", "state": {"terminated": {"exitCode": 1}}}]}),
        );
        pods.remove(1);
        let p = run(&j, &pods, now());
        assert!(p.status.is_true(condition::FAILED));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::CreatePod(_))), "{:?}", p.actions);
    }

    #[test]
    fn a_name_taken_over_while_running_stops_new_pods_but_not_suspend() {
        let j = job(|_| {});
        let j = with_status(&j, &run(&j, &[], now()).status);
        let blocked =
            Blocked { reason: "NameConflict".into(), message: "Service fm-ps exists and is not this job's".into() };
        let mut pods = all_pods(&j, running());
        pods.remove(1); // worker-0 is gone
        let p = run_blocked(&j, &pods, now(), Some(blocked.clone()));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::CreatePod(_))), "{:?}", p.actions);
        assert_eq!(p.status.condition(condition::RUNNING).unwrap().reason, "NameConflict");
        let mut suspended = with_status(&j, &p.status);
        suspended.spec.run_policy = Some(draco_api::RunPolicy { suspend: Some(true), ..Default::default() });
        let p = run_blocked(&suspended, &pods, now(), Some(blocked));
        assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::DeletePod(_))).count(), 3, "{:?}", p.actions);
    }

    #[test]
    fn a_container_that_cannot_start_is_named_in_the_running_condition() {
        let j = job(|_| {});
        let j = with_status(&j, &run(&j, &[], now()).status);
        let mut pods = all_pods(&j, running());
        pods[1] = pod(
            &j,
            Replica::Worker(0),
            json!({"phase": "Pending", "containerStatuses": [{"name": "draco", "ready": false, "restartCount": 0,
                "image": "draco:test", "imageID": "", "state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "couldn't find key worker-0 in Secret ml/fm-tokens-uid-1"}}}]}),
        );
        let p = run(&j, &pods, now());
        let running = p.status.condition(condition::RUNNING).unwrap();
        assert_eq!(running.reason, "PodsCannotStart");
        assert!(
            running.message.starts_with("fm-worker-0: CreateContainerConfigError: couldn't find key"),
            "{}",
            running.message
        );
    }
}
