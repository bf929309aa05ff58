//! The CRD the API server gets: structural, in sync with `crds/`, accepting every example in
//! `manifests/`, and with CEL rules that agree with the Rust validation on many specs.

use std::path::{Path, PathBuf};

use draco_api::DracoJob;
use draco_api::schema::{crd_yaml, open_api_schema, validate_cel};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Kubernetes' structural-schema rules (apiextensions): every node typed (unless int-or-string
/// or preserve-unknown-fields), no `$ref`, `properties` and `additionalProperties` exclusive,
/// nothing but value constraints inside allOf/anyOf/oneOf/not, and `metadata` constrained only
/// in name/generateName.
fn structural_violations(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Value::Object(map) = node else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    for banned in ["$ref", "definitions", "$defs", "$schema"] {
        if map.contains_key(banned) {
            out.push(format!("{path}: has {banned}"));
        }
    }
    if in_junctor {
        for banned in ["type", "description", "default", "additionalProperties", "nullable"] {
            if map.contains_key(banned) {
                out.push(format!("{path}: {banned} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else {
        let free = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        match map.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            Some(other) => out.push(format!("{path}: type {other:?}")),
            None if free => {}
            None => out.push(format!("{path}: no type")),
        }
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        out.push(format!("{path}: properties and additionalProperties together"));
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (name, sub) in props {
            structural_violations(sub, &format!("{path}.{name}"), in_junctor, out);
        }
    }
    if let Some(sub @ Value::Object(_)) = map.get("additionalProperties") {
        structural_violations(sub, &format!("{path}[*]"), in_junctor, out);
    }
    if let Some(items) = map.get("items") {
        structural_violations(items, &format!("{path}[]"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = map.get(junctor) {
            for (i, sub) in list.iter().enumerate() {
                structural_violations(sub, &format!("{path}.{junctor}[{i}]"), true, out);
            }
        }
    }
    if let Some(sub) = map.get("not") {
        structural_violations(sub, &format!("{path}.not"), true, out);
    }
}

#[test]
fn crd_is_structural() {
    let schema = open_api_schema();
    let mut violations = Vec::new();
    structural_violations(&schema, "openAPIV3Schema", false, &mut violations);
    if let Some(Value::Object(meta)) = schema.pointer("/properties/metadata") {
        let allowed = ["type", "properties"];
        assert!(meta.keys().all(|k| allowed.contains(&k.as_str())), "metadata constrained: {meta:?}");
    }
    assert!(violations.is_empty(), "not structural:\n{}", violations.join("\n"));
}

#[test]
fn crd_names_columns_and_subresources() {
    let crd: Value = serde_json::to_value(draco_api::schema::custom_resource_definition()).unwrap();
    assert_eq!(crd["metadata"]["name"], "dracojobs.draco.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["dj"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["State", "Workers", "R", "Step", "Accuracy", "Suspects", "Age"]);
    // Integers are Kubernetes integers.
    let text = crd.to_string();
    assert!(!text.contains("\"uint"), "unsigned formats left in the schema");
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = repo_root().join("crds/dracojobs.draco.dev.yaml");
    let fresh = crd_yaml();
    if std::env::var_os("DRACO_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is out of date with the Rust types: run `draco crd > crds/dracojobs.draco.dev.yaml` \
         (or DRACO_UPDATE_CRDS=1 cargo test -p draco-api --test crd)",
        path.display()
    );
}

/// Unknown fields: the API server prunes them from structural schemas, and with strict field
/// validation (kubectl's default since 1.27) refuses them. Modelled here by closing every object
/// that lists its properties and does not preserve unknown fields.
fn close_objects(node: &mut Value) {
    if let Value::Object(map) = node {
        if map.contains_key("properties") && !map.contains_key("x-kubernetes-preserve-unknown-fields") {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        map.values_mut().for_each(close_objects);
    } else if let Value::Array(items) = node {
        items.iter_mut().for_each(close_objects);
    }
}

/// Validates `object` against the CRD's openAPIV3Schema as JSON Schema (types, enums, bounds,
/// required fields, unknown fields) — what the API server checks before the CEL rules.
fn schema_errors(object: &Value) -> Vec<String> {
    thread_local! {
        static VALIDATOR: jsonschema::Validator = {
            // apiVersion, kind and metadata are always allowed at the root: close below it.
            let mut schema = open_api_schema();
            schema["properties"].as_object_mut().unwrap().values_mut().for_each(close_objects);
            jsonschema::options().build(&schema).expect("the CRD schema compiles as JSON Schema")
        };
    }
    VALIDATOR.with(|v| v.iter_errors(object).map(|e| format!("{}: {e}", e.instance_path())).collect())
}

fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

fn example_manifests() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![repo_root().join("manifests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                // A top-level `kind: DracoJob`: manifests/install.yaml only mentions the kind inside the CRD.
                && std::fs::read_to_string(&path).unwrap().lines().any(|line| line == "kind: DracoJob")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_example_validates_against_the_crd() {
    let examples = example_manifests();
    assert!(!examples.is_empty(), "no DracoJob examples found under manifests/");
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        let job = DracoJob::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let errors = schema_errors(&yaml_to_json(&text));
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        validate_cel(&job, None).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    }
}

const BASE: &str = "
apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: grid}
spec:
  workers: 6
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  model: {architecture: mlp, hidden: [16]}
  dataset: {format: synthetic}
  training:
    steps: 10
    batchSize: 60
    optimizer: {type: sgd, learningRate: 0.05}
";

fn job_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = yaml_to_json(BASE);
    edit(&mut v);
    v
}

/// The admission verdict: the schema, then the CEL rules.
fn admitted(object: &Value) -> Result<(), String> {
    let errors = schema_errors(object);
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let job: DracoJob = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    validate_cel(&job, None).map_err(|e| e.join("; "))
}

fn rust_verdict(object: &Value) -> Result<(), String> {
    let job: DracoJob = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    job.validate().map_err(|e| e.to_string())
}

#[test]
fn cel_rules_agree_with_the_rust_validation() {
    let codes = ["repetition", "cyclic", "none"];
    let aggregators = [None, Some("mean"), Some("median"), Some("krum"), Some("bulyan")];
    let mut checked = 0;
    let mut rejected = 0;
    for code in codes {
        for p in [1usize, 2, 3, 6, 7, 9, 20, 21, 41] {
            for r in [1usize, 2, 3, 5] {
                for (s, e) in [(0usize, 0usize), (1, 0), (0, 1), (1, 1), (2, 0)] {
                    for block in [None, Some(3usize), Some(7), Some(18)] {
                        for aggregator in aggregators {
                            if block.is_some() && code != "cyclic" && p != 6 {
                                continue; // a sample of the misplaced-field cases is enough
                            }
                            let object = job_with(|v| {
                                let spec = &mut v["spec"];
                                spec["code"] = code.into();
                                spec["workers"] = p.into();
                                spec["redundancy"] = r.into();
                                spec["byzantineTolerance"] = s.into();
                                spec["stragglerTolerance"] = e.into();
                                spec["training"]["batchSize"] = 100.into();
                                if let Some(b) = block {
                                    spec["cyclicBlockSize"] = b.into();
                                }
                                if let Some(a) = aggregator {
                                    spec["aggregator"] = a.into();
                                }
                            });
                            let (rust, cel) = (rust_verdict(&object), admitted(&object));
                            assert_eq!(
                                rust.is_ok(),
                                cel.is_ok(),
                                "code {code} P {p} r {r} s {s} e {e} block {block:?} aggregator {aggregator:?}: \
                                 Rust says {rust:?}, admission says {cel:?}"
                            );
                            checked += 1;
                            rejected += usize::from(rust.is_err());
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000 && rejected > 500 && checked - rejected > 100, "{checked} checked, {rejected} rejected");
}

#[test]
fn field_rules_agree_with_the_rust_validation() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("batch below workers", |v| v["spec"]["training"]["batchSize"] = 5.into()),
        ("zero learning rate", |v| v["spec"]["training"]["optimizer"]["learningRate"] = 0.0.into()),
        ("momentum 1", |v| v["spec"]["training"]["optimizer"]["momentum"] = 1.0.into()),
        ("zero hidden width", |v| v["spec"]["model"]["hidden"] = serde_json::json!([16, 0])),
        ("idx without path", |v| v["spec"]["dataset"]["format"] = "idx".into()),
        ("adversary count above workers", |v| {
            v["spec"]["adversary"] = serde_json::json!({"count": 7, "attack": "reverse"})
        }),
        ("zero straggler timeout", |v| v["spec"]["stragglerTimeoutSeconds"] = 0.0.into()),
        ("steps 0", |v| v["spec"]["training"]["steps"] = 0.into()),
        ("negative backoff", |v| v["spec"]["runPolicy"] = serde_json::json!({"backoffLimit": -1})),
        ("unknown attack", |v| v["spec"]["adversary"] = serde_json::json!({"count": 1, "attack": "teleport"})),
        ("52-character name", |v| v["metadata"]["name"] = "a".repeat(52).into()),
        ("name starting with a digit", |v| v["metadata"]["name"] = "1fm".into()),
        ("name ending with '-'", |v| v["metadata"]["name"] = "fm-".into()),
        ("name with a dot", |v| v["metadata"]["name"] = "f.m".into()),
        ("deadline above ten years", |v| {
            v["spec"]["runPolicy"] = serde_json::json!({"activeDeadlineSeconds": 315_360_001})
        }),
        ("deadline past the timestamps' range", |v| {
            v["spec"]["runPolicy"] = serde_json::json!({"activeDeadlineSeconds": 250_000_000_000i64})
        }),
        ("zero deadline", |v| v["spec"]["runPolicy"] = serde_json::json!({"activeDeadlineSeconds": 0})),
        ("ttl above a year", |v| v["spec"]["runPolicy"] = serde_json::json!({"ttlSecondsAfterFinished": 31_536_001})),
        ("negative ttl", |v| v["spec"]["runPolicy"] = serde_json::json!({"ttlSecondsAfterFinished": -1})),
    ];
    for (what, edit) in cases {
        let object = job_with(edit);
        assert!(admitted(&object).is_err(), "{what}: admitted");
        assert!(rust_verdict(&object).is_err(), "{what}: passed the Rust validation");
    }
    let fine: Vec<(&str, Edit)> = vec![
        ("51-character name", |v| v["metadata"]["name"] = "a".repeat(51).into()),
        ("name with digits and dashes", |v| v["metadata"]["name"] = "f-1m-2".into()),
        ("one-letter name", |v| v["metadata"]["name"] = "f".into()),
        ("adversary", |v| v["spec"]["adversary"] = serde_json::json!({"count": 1, "attack": "labelFlip"})),
        ("ten-year deadline, one-year ttl", |v| {
            v["spec"]["runPolicy"] =
                serde_json::json!({"activeDeadlineSeconds": 315_360_000, "ttlSecondsAfterFinished": 31_536_000})
        }),
        ("run policy", |v| {
            v["spec"]["runPolicy"] = serde_json::json!({"cleanPodPolicy": "All", "backoffLimit": 0, "suspend": true})
        }),
        ("pod template", |v| {
            v["spec"]["worker"] = serde_json::json!({"restartPolicy": "ExitCode", "template": {"spec": {
                "containers": [{"name": "draco", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}}],
                "nodeSelector": {"pool": "cpu"}}}})
        }),
    ];
    for (what, edit) in fine {
        let object = job_with(edit);
        assert_eq!(admitted(&object), Ok(()), "{what}");
        assert_eq!(rust_verdict(&object), Ok(()), "{what}");
    }
}

#[test]
fn unknown_fields_are_refused_by_schema_and_loader() {
    let object = job_with(|v| v["spec"]["redundency"] = 3.into());
    assert!(schema_errors(&object).iter().any(|e| e.contains("redundency")), "{:?}", schema_errors(&object));
    assert!(DracoJob::from_yaml(&BASE.replace("redundancy: 3", "redundancy: 3\n  redundency: 3")).is_err());
}

#[test]
fn running_jobs_keep_their_code_and_model() {
    let old: DracoJob = serde_json::from_value(job_with(|_| {})).unwrap();
    type Edit = fn(&mut Value);
    let forbidden: Vec<(&str, Edit)> = vec![
        ("workers", |v| v["spec"]["workers"] = 9.into()),
        ("code", |v| v["spec"]["code"] = "cyclic".into()),
        ("model", |v| v["spec"]["model"]["hidden"] = serde_json::json!([32])),
        ("adding a drill", |v| v["spec"]["adversary"] = serde_json::json!({"count": 1, "attack": "reverse"})),
        ("training steps", |v| v["spec"]["training"]["steps"] = 20.into()),
    ];
    for (what, edit) in forbidden {
        let new: DracoJob = serde_json::from_value(job_with(edit)).unwrap();
        assert!(validate_cel(&new, Some(&old)).is_err(), "changing {what} was allowed");
    }
    let allowed: Vec<(&str, Edit)> = vec![
        ("suspend", |v| v["spec"]["runPolicy"] = serde_json::json!({"suspend": true})),
        ("straggler timeout", |v| v["spec"]["stragglerTimeoutSeconds"] = 60.0.into()),
        ("nothing", |_| {}),
    ];
    for (what, edit) in allowed {
        let new: DracoJob = serde_json::from_value(job_with(edit)).unwrap();
        assert_eq!(validate_cel(&new, Some(&old)), Ok(()), "changing {what}");
    }
}
