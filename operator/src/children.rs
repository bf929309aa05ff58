//! Desired state: the objects one DracoJob owns, built as pure functions of the job (no API
//! calls), so every field the operator sets is unit-tested. Names and labels follow
//! architecture.md: `<job>-ps`, `<job>-worker-<i>`, `draco.dev/*` labels, a controller
//! ownerReference on everything.

use std::collections::BTreeMap;

use draco_api::{DracoJob, ReplicaSpec};
use draco_core::scheme::CodeKind;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

pub const GRPC_PORT: i32 = 7070;
pub const HTTP_PORT: i32 = 9090;
pub const WORKER_METRICS_PORT: i32 = 9091;

pub const LABEL_JOB: &str = "draco.dev/job-name";
pub const LABEL_REPLICA_TYPE: &str = "draco.dev/replica-type";
pub const LABEL_REPLICA_INDEX: &str = "draco.dev/replica-index";
pub const LABEL_GROUP_INDEX: &str = "draco.dev/group-index";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "draco-operator");

/// The container the operator fills in (a user's template may name one `draco` to set its image,
/// resources and env).
pub const CONTAINER: &str = "draco";
const CONFIG_DIR: &str = "/etc/draco/config";
const TOKENS_DIR: &str = "/etc/draco/tokens";
/// The operator's own volumes. A template volume of the same name is dropped (the job's wiring
/// wins); prefixed so that a user's ordinary `config` or `tokens` volume never collides.
const CONFIG_VOLUME: &str = "draco-config";
const TOKENS_VOLUME: &str = "draco-tokens";
/// A user's pod template may bring its own volume under this name (e.g. a PVC) so checkpoints
/// survive suspend/resume and node loss; the default is an emptyDir.
pub const CHECKPOINT_VOLUME: &str = "checkpoints";
const CHECKPOINT_DIR: &str = "/var/lib/draco/checkpoints";
/// Non-root user of the image (distroless `nonroot`).
const RUN_AS_USER: i64 = 65532;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Replica {
    Ps,
    Worker(usize),
}

impl Replica {
    pub fn type_label(self) -> &'static str {
        match self {
            Replica::Ps => "ps",
            Replica::Worker(_) => "worker",
        }
    }
}

pub fn ps_name(job: &str) -> String {
    format!("{job}-ps")
}
pub fn worker_name(job: &str, rank: usize) -> String {
    format!("{job}-worker-{rank}")
}
pub fn pod_name(job: &str, replica: Replica) -> String {
    match replica {
        Replica::Ps => ps_name(job),
        Replica::Worker(rank) => worker_name(job, rank),
    }
}
pub fn config_map_name(job: &str) -> String {
    format!("{job}-config")
}
/// The token Secret's name carries the job's UID: a job deleted and re-created under the same
/// name never meets the old job's Secret (still awaiting garbage collection), and an existing
/// Secret of this name can only be this job's, so the operator never reads one back.
pub fn secret_name(job: &DracoJob) -> String {
    match job.metadata.uid.as_deref() {
        Some(uid) => format!("{}-tokens-{uid}", job.name()),
        None => format!("{}-tokens", job.name()),
    }
}
pub fn token_key(rank: usize) -> String {
    format!("worker-{rank}")
}

/// Which replica a pod of this job is, from its name.
pub fn replica_of(job: &str, pod_name: &str) -> Option<Replica> {
    let rest = pod_name.strip_prefix(job)?.strip_prefix('-')?;
    if rest == "ps" {
        return Some(Replica::Ps);
    }
    let rank = rest.strip_prefix("worker-")?;
    (!rank.starts_with('0') || rank == "0").then_some(())?;
    rank.parse().ok().map(Replica::Worker)
}

/// Every pod the job should have while it runs.
pub fn replicas(job: &DracoJob) -> Vec<Replica> {
    std::iter::once(Replica::Ps).chain((0..job.spec.workers).map(Replica::Worker)).collect()
}

/// The decoding group (repetition) or block (cyclic) a worker belongs to.
pub fn group_of(job: &DracoJob, rank: usize) -> usize {
    let scheme = job.job_config().scheme;
    match scheme.code {
        CodeKind::Repetition => rank / scheme.redundancy.max(1),
        CodeKind::Cyclic => {
            scheme.cyclic_blocks().ok().and_then(|b| b.iter().position(|r| r.contains(&rank))).unwrap_or(0)
        }
        CodeKind::None => rank,
    }
}

pub fn job_labels(job: &DracoJob) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_JOB.to_string(), job.name().to_string()), (MANAGED_BY.0.into(), MANAGED_BY.1.into())])
}

fn replica_labels(job: &DracoJob, replica: Replica) -> BTreeMap<String, String> {
    let mut labels = job_labels(job);
    labels.insert(LABEL_REPLICA_TYPE.into(), replica.type_label().into());
    let (index, group) = match replica {
        Replica::Ps => (0, 0),
        Replica::Worker(rank) => (rank, group_of(job, rank)),
    };
    labels.insert(LABEL_REPLICA_INDEX.into(), index.to_string());
    if let Replica::Worker(_) = replica {
        labels.insert(LABEL_GROUP_INDEX.into(), group.to_string());
    }
    labels
}

pub fn owner_reference(job: &DracoJob) -> OwnerReference {
    job.controller_owner_ref(&()).expect("a DracoJob from the API server has a name and a uid")
}

fn meta(job: &DracoJob, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(job)]),
        ..ObjectMeta::default()
    }
}

/// The runtime configuration every process reads (`config.json`).
pub fn config_map(job: &DracoJob) -> ConfigMap {
    let config = serde_json::to_string_pretty(&job.job_config()).expect("JobConfig serializes");
    ConfigMap {
        metadata: meta(job, config_map_name(job.name()), job_labels(job)),
        data: Some(BTreeMap::from([("config.json".to_string(), config)])),
        ..ConfigMap::default()
    }
}

/// One fresh token per worker, one key each, so a worker pod can mount only its own.
pub fn token_secret(job: &DracoJob, tokens: &[String]) -> Secret {
    let data = tokens.iter().enumerate().map(|(rank, t)| (token_key(rank), t.clone())).collect();
    Secret {
        metadata: meta(job, secret_name(job), job_labels(job)),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        ..Secret::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn http_probe(path: &str, port_name: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port_name.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(6),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..Default::default() }
}

/// The template's container securityContext with the container-only hardening it leaves unset
/// filled in: a read-only root, no privilege escalation, no capabilities. Who the process runs
/// as (user, non-root, seccomp) is set at the pod level, so that a template's pod-level
/// `runAsUser` (e.g. a PVC's owner) is not overridden here. Explicit fields are the user's.
fn harden_container(user: Option<SecurityContext>) -> SecurityContext {
    let mut sc = user.unwrap_or_default();
    sc.read_only_root_filesystem.get_or_insert(true);
    sc.allow_privilege_escalation.get_or_insert(false);
    let capabilities = sc.capabilities.get_or_insert_with(Capabilities::default);
    capabilities.drop.get_or_insert_with(|| vec!["ALL".into()]);
    sc
}

/// The pod's securityContext with the identity hardening the template leaves unset: the
/// image's non-root user, runAsNonRoot, RuntimeDefault seccomp. A template that asks for root
/// (runAsUser 0 on the pod or the container) gets no runAsNonRoot, which the kubelet would
/// otherwise answer by never starting the container.
fn harden_pod(user: Option<PodSecurityContext>, container: Option<&SecurityContext>) -> PodSecurityContext {
    let mut sc = user.unwrap_or_default();
    let asks_for_root = sc.run_as_user == Some(0) || container.and_then(|c| c.run_as_user) == Some(0);
    if !asks_for_root {
        sc.run_as_non_root.get_or_insert(true);
    }
    sc.run_as_user.get_or_insert(RUN_AS_USER);
    sc.fs_group.get_or_insert(RUN_AS_USER);
    sc.seccomp_profile.get_or_insert_with(runtime_default_seccomp);
    sc
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }
}

/// Whether the PS's template brings its own `checkpoints` volume (not an emptyDir), so its
/// checkpoints outlive the pod (suspend/resume, node loss).
pub fn has_persistent_checkpoints(job: &DracoJob) -> bool {
    let template = job.spec.ps.as_ref().and_then(|r| r.template.as_ref());
    let volumes = template.and_then(|t| t.spec.as_ref()).and_then(|s| s.volumes.as_ref());
    volumes.into_iter().flatten().any(|v| v.name == CHECKPOINT_VOLUME && v.empty_dir.is_none())
}

/// Where the operator's image and pull policy come from.
#[derive(Clone, Debug)]
pub struct PodDefaults {
    pub image: String,
    pub image_pull_policy: Option<String>,
}

/// A PS or worker pod: the user's template (if any) with the operator's container wiring on top.
pub fn pod(job: &DracoJob, replica: Replica, defaults: &PodDefaults) -> Pod {
    let name = job.name();
    let replica_spec: Option<&ReplicaSpec> = match replica {
        Replica::Ps => job.spec.ps.as_ref(),
        Replica::Worker(_) => job.spec.worker.as_ref(),
    };
    let template = replica_spec.and_then(|r| r.template.clone()).unwrap_or_default();
    let mut spec: PodSpec = template.spec.unwrap_or_default();
    let user_meta = template.metadata.unwrap_or_default();

    // The container: the one named `draco`, else the first, else a new one.
    let index = spec.containers.iter().position(|c| c.name == CONTAINER).unwrap_or(0);
    if spec.containers.is_empty() {
        spec.containers.push(Container::default());
    }
    let mut container = spec.containers.remove(index);
    container.name = CONTAINER.into();
    if container.image.as_deref().unwrap_or("").is_empty() {
        container.image = Some(defaults.image.clone());
        if container.image_pull_policy.is_none() {
            container.image_pull_policy = defaults.image_pull_policy.clone();
        }
    }
    let mut ours = vec![env("DRACO_CONFIG", format!("{CONFIG_DIR}/config.json")), env("RUST_LOG", "info")];
    let mut mounts = vec![mount(CONFIG_VOLUME, CONFIG_DIR, true)];
    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map_name(name), ..Default::default() }),
        ..Volume::default()
    }];
    match replica {
        Replica::Ps => {
            container.args = Some(vec!["ps".into()]);
            ours.extend([
                env("DRACO_GRPC_ADDR", format!("0.0.0.0:{GRPC_PORT}")),
                env("DRACO_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
                env("DRACO_TOKENS_DIR", TOKENS_DIR),
                env("DRACO_CHECKPOINT_DIR", CHECKPOINT_DIR),
                env("DRACO_WORLD_SIZE", job.spec.workers.to_string()),
                // The operator polls /status every POLL: a PS that lingers twice that long
                // after the last step is read at least once with its final step and accuracy.
                env("DRACO_LINGER_SECONDS", (2 * crate::plan::POLL.as_secs()).to_string()),
            ]);
            container.ports = Some(vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]);
            container.readiness_probe = Some(http_probe("/readyz", "http", 5));
            container.liveness_probe = Some(http_probe("/healthz", "http", 10));
            mounts.push(mount(TOKENS_VOLUME, TOKENS_DIR, true));
            mounts.push(mount(CHECKPOINT_VOLUME, CHECKPOINT_DIR, false));
            volumes.push(Volume {
                name: TOKENS_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name(job)),
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..Volume::default()
            });
            volumes.push(Volume {
                name: CHECKPOINT_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
        }
        Replica::Worker(rank) => {
            container.args = Some(vec!["worker".into()]);
            ours.extend([
                env("DRACO_RANK", rank.to_string()),
                env("DRACO_WORLD_SIZE", job.spec.workers.to_string()),
                env("DRACO_PS_ADDR", format!("http://{}:{GRPC_PORT}", ps_name(name))),
                env("DRACO_METRICS_ADDR", format!("0.0.0.0:{WORKER_METRICS_PORT}")),
                EnvVar {
                    name: "DRACO_TOKEN".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name(job),
                            key: token_key(rank),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..EnvVar::default()
                },
            ]);
            container.ports = Some(vec![port("metrics", WORKER_METRICS_PORT)]);
        }
    }
    // The operator's variables win over a template's of the same name (they wire the job).
    let mut all_env: Vec<EnvVar> = container
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !ours.iter().any(|o| o.name == e.name))
        .collect();
    all_env.extend(ours);
    container.env = Some(all_env);
    let mut all_mounts = container.volume_mounts.take().unwrap_or_default();
    all_mounts.retain(|m| !mounts.iter().any(|o| o.mount_path == m.mount_path));
    all_mounts.extend(mounts);
    container.volume_mounts = Some(all_mounts);
    container.security_context = Some(harden_container(container.security_context.take()));
    spec.containers.insert(0, container);

    // A template's `checkpoints` volume (e.g. a PVC) replaces our emptyDir; the config and
    // token volumes are always ours.
    let mut all_volumes = spec.volumes.take().unwrap_or_default();
    all_volumes.retain(|u| u.name != CONFIG_VOLUME && u.name != TOKENS_VOLUME);
    volumes.retain(|v| !all_volumes.iter().any(|u| u.name == v.name));
    all_volumes.extend(volumes);
    spec.volumes = Some(all_volumes);
    // Restarts are the operator's decision (restartPolicy, backoffLimit, exit codes).
    spec.restart_policy = Some("Never".into());
    spec.automount_service_account_token = Some(false);
    spec.enable_service_links = Some(false);
    let container_context = spec.containers.first().and_then(|c| c.security_context.as_ref());
    spec.security_context = Some(harden_pod(spec.security_context.take(), container_context));
    if let Replica::Worker(_) = replica {
        spec.hostname = Some(pod_name(name, replica));
    }

    let mut labels = user_meta.labels.unwrap_or_default();
    labels.extend(replica_labels(job, replica));
    let mut metadata = meta(job, pod_name(name, replica), labels);
    metadata.annotations = user_meta.annotations;
    Pod { metadata, spec: Some(spec), ..Pod::default() }
}

/// The PS's stable address: gRPC for workers, HTTP for the operator and Prometheus.
pub fn ps_service(job: &DracoJob) -> Service {
    let mut selector = job_labels(job);
    selector.insert(LABEL_REPLICA_TYPE.into(), "ps".into());
    let service_port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(job, ps_name(job.name()), job_labels(job)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![service_port("grpc", GRPC_PORT), service_port("http", HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Only this job's workers may reach the PS's gRPC port; its HTTP port (metrics, status) stays
/// open to the operator and Prometheus.
pub fn network_policy(job: &DracoJob) -> NetworkPolicy {
    let mut ps = job_labels(job);
    ps.insert(LABEL_REPLICA_TYPE.into(), "ps".into());
    let mut workers = job_labels(job);
    workers.insert(LABEL_REPLICA_TYPE.into(), "worker".into());
    let tcp = |number: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(job, ps_name(job.name()), job_labels(job)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(ps), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector { match_labels: Some(workers), ..Default::default() }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![tcp(GRPC_PORT)]),
                },
                NetworkPolicyIngressRule { from: None, ports: Some(vec![tcp(HTTP_PORT)]) },
            ]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A three-worker job with `edit` applied to its JSON form.
    fn job(edit: impl FnOnce(&mut Value)) -> DracoJob {
        let mut v = json!({
            "apiVersion": "draco.dev/v1alpha1", "kind": "DracoJob",
            "metadata": {"name": "fm", "namespace": "ml", "uid": "uid-1"},
            "spec": {"workers": 3, "redundancy": 3, "code": "repetition", "byzantineTolerance": 1,
                "model": {"architecture": "mlp", "hidden": [16]}, "dataset": {"format": "synthetic"},
                "training": {"steps": 10, "batchSize": 30, "optimizer": {"type": "sgd", "learningRate": 0.05}}}
        });
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn defaults() -> PodDefaults {
        PodDefaults { image: "draco:test".into(), image_pull_policy: None }
    }

    /// A template volume called `config` or `tokens` is the user's own: the job's ConfigMap and
    /// token Secret stay under /etc/draco/config and /etc/draco/tokens.
    #[test]
    fn a_template_volume_named_config_or_tokens_does_not_replace_the_operators() {
        let j = job(|v| {
            let template = json!({"spec": {
                "containers": [{"name": "draco",
                    "volumeMounts": [{"name": "config", "mountPath": "/app/config"}, {"name": "tokens", "mountPath": "/app/tokens"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "my-app-settings"}},
                            {"name": "tokens", "secret": {"secretName": "my-api-keys"}}]}});
            v["spec"]["ps"] = json!({"template": template.clone()});
            v["spec"]["worker"] = json!({"template": template});
        });
        for replica in [Replica::Ps, Replica::Worker(0)] {
            let spec = pod(&j, replica, &defaults()).spec.unwrap();
            let mounts = spec.containers[0].volume_mounts.clone().unwrap();
            let volumes = spec.volumes.clone().unwrap();
            let backing = |path: &str| {
                let m = mounts.iter().find(|m| m.mount_path == path).unwrap();
                volumes.iter().find(|v| v.name == m.name).unwrap().clone()
            };
            let config = backing("/etc/draco/config");
            assert_eq!(
                config.config_map.as_ref().map(|c| c.name.as_str()),
                Some("fm-config"),
                "{replica:?}: DRACO_CONFIG is read from {config:?}"
            );
            if replica == Replica::Ps {
                let tokens = backing("/etc/draco/tokens");
                assert_eq!(
                    tokens.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
                    Some("fm-tokens-uid-1"),
                    "PS tokens are read from {tokens:?}"
                );
            }
        }
    }

    /// A template securityContext that sets one field (runAsUser, e.g. to match a PVC's owner)
    /// keeps every hardening field it left unset, and a pod-level runAsUser is not overridden
    /// at the container level.
    #[test]
    fn a_partial_template_security_context_keeps_the_hardening() {
        let j = job(|v| {
            v["spec"]["worker"] = json!({"template": {"spec": {"containers": [{"name": "draco",
                "securityContext": {"runAsUser": 1000}}]}}});
            v["spec"]["ps"] = json!({"template": {"spec": {"securityContext": {"runAsUser": 2000}, "containers": []}}});
        });
        let spec = pod(&j, Replica::Worker(0), &defaults()).spec.unwrap();
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{sc:?}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{sc:?}");
        assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
        assert_eq!(sc.run_as_user, Some(1000));
        let psc = spec.security_context.unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.seccomp_profile.map(|s| s.type_)),
            (Some(true), Some("RuntimeDefault".into()))
        );
        let ps = pod(&j, Replica::Ps, &defaults()).spec.unwrap();
        assert_eq!(ps.security_context.unwrap().run_as_user, Some(2000));
        assert_eq!(
            ps.containers[0].security_context.as_ref().unwrap().run_as_user,
            None,
            "would override the pod's 2000"
        );
    }

    /// A template that asks for root gets no runAsNonRoot (the kubelet would refuse to start it).
    #[test]
    fn a_template_asking_for_root_is_not_made_unstartable() {
        let j = job(|v| {
            v["spec"]["worker"] = json!({"template": {"spec": {"containers": [{"name": "draco",
                "securityContext": {"runAsUser": 0}}]}}})
        });
        let spec = pod(&j, Replica::Worker(0), &defaults()).spec.unwrap();
        assert_eq!(spec.security_context.unwrap().run_as_non_root, None);
        assert_eq!(spec.containers[0].security_context.as_ref().unwrap().run_as_non_root, None);
    }

    #[test]
    fn only_a_non_emptydir_checkpoints_volume_is_persistent() {
        let with = |volume: Value| {
            job(|v| v["spec"]["ps"] = json!({"template": {"spec": {"containers": [], "volumes": [volume]}}}))
        };
        assert!(!has_persistent_checkpoints(&job(|_| {})));
        assert!(!has_persistent_checkpoints(&with(json!({"name": "checkpoints", "emptyDir": {}}))));
        assert!(!has_persistent_checkpoints(&with(
            json!({"name": "data", "persistentVolumeClaim": {"claimName": "c"}})
        )));
        let pvc = with(json!({"name": "checkpoints", "persistentVolumeClaim": {"claimName": "fm-ckpt"}}));
        assert!(has_persistent_checkpoints(&pvc));
        // The template's PVC replaces the operator's emptyDir under the checkpoint directory.
        let spec = pod(&pvc, Replica::Ps, &defaults()).spec.unwrap();
        let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == CHECKPOINT_VOLUME).unwrap();
        assert_eq!(volume.persistent_volume_claim.map(|c| c.claim_name).as_deref(), Some("fm-ckpt"));
    }

    #[test]
    fn the_ps_lingers_past_one_status_poll_so_its_final_status_is_read() {
        let spec = pod(&job(|_| {}), Replica::Ps, &defaults()).spec.unwrap();
        let env = spec.containers[0].env.clone().unwrap();
        let linger = env.iter().find(|e| e.name == "DRACO_LINGER_SECONDS").and_then(|e| e.value.clone()).unwrap();
        assert!(linger.parse::<u64>().unwrap() > crate::plan::POLL.as_secs(), "{linger}");
    }
}
