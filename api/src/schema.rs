//! The CRD as the API server gets it: kube's derived schema, made to fit Kubernetes (integers
//! stored as int64), plus the cross-field rules as CEL (`x-kubernetes-validations`), so an
//! invalid DracoJob is refused at `kubectl apply` time. The same rules run client-side in
//! `draco validate` and in the operator (see `validate_cel`), next to the Rust checks.

use draco_core::scheme::MAX_CYCLIC_DATA_ROWS;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::resource::DracoJob;

/// One CEL rule with the message the API server returns when it is broken.
#[derive(Clone, Debug)]
pub struct CelRule {
    pub rule: String,
    pub message: String,
}

fn rule(rule: impl Into<String>, message: impl Into<String>) -> CelRule {
    CelRule { rule: rule.into(), message: message.into() }
}

/// The longest job name: children are `<job>-worker-<rank>` and must fit 63 characters.
pub const MAX_NAME_LEN: usize = 63 - "-worker-1023".len();

/// A job name: a DNS-1035 label (lowercase letter first, then lowercase letters, digits and
/// '-', a letter or digit last) of at most [`MAX_NAME_LEN`] characters. DNS-1035 because the
/// PS Service `<name>-ps` must be one; the length so `<name>-worker-<rank>` fits 63.
pub const JOB_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// [`JOB_NAME_PATTERN`] and [`MAX_NAME_LEN`], in Rust.
pub fn is_job_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && name.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

/// Rules on the whole object (only `metadata.name` of the metadata is visible to CEL).
pub fn object_rules() -> Vec<CelRule> {
    vec![
        rule(
            format!("self.metadata.name.size() <= {MAX_NAME_LEN}"),
            format!("metadata.name must be at most {MAX_NAME_LEN} characters so '<name>-worker-<rank>' fits 63"),
        ),
        rule(
            format!("self.metadata.name.matches('{JOB_NAME_PATTERN}')"),
            "metadata.name must start with a lowercase letter, contain only lowercase letters, digits and '-', \
             and end with a letter or digit (the PS Service '<name>-ps' must be a DNS-1035 label)",
        ),
    ]
}

/// Fields that cannot change once the job exists: changing them would change the code, the
/// partitions or the model under a running PS. runPolicy (suspend, deadlines), the straggler
/// timeout and the pod templates stay editable.
pub const IMMUTABLE_SPEC_FIELDS: [&str; 12] = [
    "workers",
    "redundancy",
    "code",
    "aggregator",
    "byzantineTolerance",
    "stragglerTolerance",
    "cyclicBlockSize",
    "model",
    "dataset",
    "training",
    "checkpoint",
    "adversary",
];

/// Cross-field rules on `spec`, mirroring `draco_core::scheme::Scheme::validate` and
/// `draco_core::job::JobConfig::validate` (a test checks they agree on many specs).
pub fn spec_rules() -> Vec<CelRule> {
    let rows = MAX_CYCLIC_DATA_ROWS;
    // Default cyclic block size: the largest block inside the envelope, rows + r - 1 workers.
    let default_block = format!("({rows} + self.redundancy - 1)");
    let blocks_fit = |size: &str| {
        // ceil(P / size) blocks of floor or ceil(P / count) workers each; the smallest needs r.
        format!("self.workers / ((self.workers + {size} - 1) / {size}) >= self.redundancy")
    };
    let immutable = IMMUTABLE_SPEC_FIELDS
        .iter()
        .map(|f| format!("(has(self.{f}) ? (has(oldSelf.{f}) && self.{f} == oldSelf.{f}) : !has(oldSelf.{f}))"))
        .collect::<Vec<_>>()
        .join(" && ");
    vec![
        rule("self.redundancy <= self.workers", "redundancy must be <= workers"),
        rule(
            "self.code == 'none' || 2 * self.byzantineTolerance + self.stragglerTolerance <= self.redundancy - 1",
            "2 * byzantineTolerance + stragglerTolerance must be <= redundancy - 1",
        ),
        rule(
            "self.code != 'none' || (self.redundancy == 1 && self.stragglerTolerance == 0 \
             && self.byzantineTolerance < self.workers)",
            "code none computes every partition once: redundancy must be 1, stragglerTolerance 0 and \
             byzantineTolerance below workers",
        ),
        rule(
            "self.code != 'repetition' || self.workers % self.redundancy == 0",
            "repetition code needs workers divisible by redundancy",
        ),
        rule("!has(self.cyclicBlockSize) || self.code == 'cyclic'", "cyclicBlockSize only applies to code cyclic"),
        rule(
            format!(
                "self.code != 'cyclic' || (has(self.cyclicBlockSize) ? (self.cyclicBlockSize >= self.redundancy \
                 && self.cyclicBlockSize <= self.workers && self.cyclicBlockSize - (self.redundancy - 1) <= {rows} \
                 && {}) : {})",
                blocks_fit("self.cyclicBlockSize"),
                blocks_fit(&default_block)
            ),
            format!(
                "cyclic code: blocks must have between redundancy and {rows} + redundancy - 1 workers \
                 (the decoder's numerical envelope); check workers and cyclicBlockSize"
            ),
        ),
        rule("!has(self.aggregator) || self.code == 'none'", "aggregator only applies to code none"),
        rule(
            "!has(self.aggregator) || self.workers >= (self.aggregator == 'mean' ? 1 : \
             self.aggregator in ['krum', 'multiKrum'] ? 2 * self.byzantineTolerance + 3 : \
             self.aggregator == 'bulyan' ? 4 * self.byzantineTolerance + 3 : 2 * self.byzantineTolerance + 1)",
            "too few workers for the aggregator and byzantineTolerance (median-type: 2s+1, krum: 2s+3, bulyan: 4s+3)",
        ),
        rule("self.stragglerTimeoutSeconds > 0.0", "stragglerTimeoutSeconds must be > 0"),
        rule(
            "self.training.batchSize >= self.workers",
            "training.batchSize must be >= workers so no partition is empty",
        ),
        rule("self.training.optimizer.learningRate > 0.0", "training.optimizer.learningRate must be > 0"),
        rule(
            "!has(self.training.optimizer.momentum) || (self.training.optimizer.momentum >= 0.0 \
             && self.training.optimizer.momentum < 1.0)",
            "training.optimizer.momentum must be in [0, 1)",
        ),
        rule(
            "!has(self.model.hidden) || self.model.hidden.all(w, w >= 1 && w <= 65536)",
            "model.hidden layer widths must be between 1 and 65536",
        ),
        rule(
            "self.dataset.format == 'synthetic' || (has(self.dataset.path) && self.dataset.path != '')",
            "dataset.path is required for idx and cifar10 datasets",
        ),
        rule("!has(self.adversary) || self.adversary.count <= self.workers", "adversary.count must be <= workers"),
        rule(
            immutable.to_string(),
            "workers, redundancy, code, tolerances, model, dataset, training, checkpoint and adversary are immutable; runPolicy, stragglerTimeoutSeconds, ps and worker may change",
        ),
    ]
}

fn to_json(rules: Vec<CelRule>) -> Value {
    Value::Array(rules.into_iter().map(|r| json!({"rule": r.rule, "message": r.message})).collect())
}

/// Kubernetes stores integers as int64: schemars' unsigned formats (`uint`, `uint64`, ...) are
/// not Kubernetes formats. The `minimum` bounds that came with them stay.
///
/// The API server does not enforce `format: int32` on custom resources, so every int32 field
/// (the pod templates have dozens: ports, UIDs, probe periods) also gets explicit bounds: one
/// object with an out-of-range number would otherwise be admitted and then break the
/// operator's list and watch of every DracoJob.
fn kubernetes_integer_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(format)) = map.get("format")
                && format.starts_with("uint")
            {
                let narrow = matches!(format.as_str(), "uint8" | "uint16" | "uint32");
                map.insert("format".into(), Value::String(if narrow { "int32" } else { "int64" }.into()));
            }
            if map.get("format").and_then(Value::as_str) == Some("int32") {
                map.entry("minimum").or_insert(json!(i32::MIN));
                map.entry("maximum").or_insert(json!(i32::MAX));
            }
            map.values_mut().for_each(kubernetes_integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_integer_formats),
        _ => {}
    }
}

/// The CustomResourceDefinition `draco crd` prints, `crds/` holds and the chart installs.
pub fn custom_resource_definition() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(DracoJob::crd()).expect("CRD serializes");
    let root = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    kubernetes_integer_formats(root);
    root["x-kubernetes-validations"] = to_json(object_rules());
    root["properties"]["spec"]["x-kubernetes-validations"] = to_json(spec_rules());
    serde_json::from_value(crd).expect("CRD deserializes")
}

/// The CRD's openAPIV3Schema as JSON.
pub fn open_api_schema() -> Value {
    let crd = custom_resource_definition();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&custom_resource_definition()).expect("CRD serializes to YAML");
    format!("# Generated by `draco crd` from the Rust types in api/ (do not edit by hand).\n---\n{body}")
}

/// The CRD's CEL rules, compiled once: what the API server evaluates at admission.
pub struct AdmissionRules {
    compiled: kube::core::cel::CompiledSchema,
    validator: kube::core::cel::Validator,
}

impl AdmissionRules {
    pub fn new() -> AdmissionRules {
        AdmissionRules {
            compiled: kube::core::cel::compile_schema(&open_api_schema()),
            validator: kube::core::cel::Validator::new(),
        }
    }

    /// Evaluates every CEL rule on `job` (and the transition rules against `old`), as the API
    /// server would. Errors name the field path and the rule's message.
    pub fn check(&self, job: &DracoJob, old: Option<&DracoJob>) -> Result<(), Vec<String>> {
        let object = serde_json::to_value(job).expect("DracoJob serializes");
        let old = old.map(|o| serde_json::to_value(o).expect("DracoJob serializes"));
        self.validator
            .validate_compiled(&self.compiled, &object, old.as_ref())
            .map_err(|errors| errors.into_vec().into_iter().map(|e| e.to_string()).collect())
    }
}

impl Default for AdmissionRules {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static RULES: AdmissionRules = AdmissionRules::new();
}

/// [`AdmissionRules::check`] with rules compiled once per thread.
pub fn validate_cel(job: &DracoJob, old: Option<&DracoJob>) -> Result<(), Vec<String>> {
    RULES.with(|rules| rules.check(job, old))
}
