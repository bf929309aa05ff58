//! A stand-in for the Kubernetes API server, at the one boundary where no real one can run here
//! (see toolbox.md): a tower-test mock service behind a real `kube::Client`, answering the verbs
//! the operator uses the way the API server does — objects stored by path, uids and
//! resourceVersions assigned on create, 409 on a duplicate name, 404 on a missing object, label
//! selectors on lists, JSON merge patches (status subresource separately), events stored. Every
//! request is logged so tests can assert exactly which writes a reconcile made.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
}

#[derive(Default)]
pub struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    log: Mutex<Vec<Logged>>,
    version: Mutex<u64>,
    /// (collection path, code, message): POSTs there are refused (as the API server refuses invalid objects).
    reject_posts: Mutex<Option<(String, u16, String)>>,
}

const COLLECTIONS: [&str; 7] = ["pods", "configmaps", "secrets", "services", "networkpolicies", "events", "dracojobs"];

fn status_error(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &object["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => labels.get(term).is_some(),
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl FakeApi {
    pub fn new() -> Arc<FakeApi> {
        Arc::new(FakeApi::default())
    }

    /// A kube client talking to this fake; the fake answers on a background task.
    pub fn client(self: &Arc<Self>) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                let (code, answer) = fake.handle(parts.method.as_str(), &parts.uri, body);
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    fn next_version(&self) -> String {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        v.to_string()
    }

    fn handle(&self, method: &str, uri: &http::Uri, body: Value) -> (u16, Value) {
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or("");
        self.log.lock().unwrap().push(Logged { method: method.into(), path: path.clone() });
        let (path, subresource) = match path.strip_suffix("/status") {
            Some(p) if !COLLECTIONS.iter().any(|c| path.ends_with(&format!("/{c}"))) => (p.to_string(), true),
            _ => (path, false),
        };
        let is_collection = COLLECTIONS.iter().any(|c| path.ends_with(&format!("/{c}")));
        let mut objects = self.objects.lock().unwrap();
        match (method, is_collection) {
            ("GET", true) => {
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(percent_decode)
                    .unwrap_or_default();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(c, _)| c == path))
                    .map(|(_, v)| v.clone())
                    .filter(|v| matches_selector(v, &selector))
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.next_version()}, "items": items}),
                )
            }
            ("POST", true) if self.reject_posts.lock().unwrap().as_ref().is_some_and(|(p, _, _)| *p == path) => {
                let (_, code, message) = self.reject_posts.lock().unwrap().clone().unwrap();
                status_error(code, "Invalid", message)
            }
            ("POST", true) => {
                let mut object = body;
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let key = format!("{path}/{name}");
                if objects.contains_key(&key) {
                    return status_error(409, "AlreadyExists", format!("{name} already exists"));
                }
                let meta = &mut object["metadata"];
                meta["uid"] = json!(format!("uid-{}", self.next_version()));
                meta["resourceVersion"] = json!(self.next_version());
                meta["creationTimestamp"] = json!("2026-12-03T10:00:00Z");
                if let Some(ns) = path.split("/namespaces/").nth(1).and_then(|r| r.split('/').next()) {
                    meta["namespace"] = json!(ns);
                }
                objects.insert(key, object.clone());
                (201, object)
            }
            ("GET", false) => match objects.get(&path) {
                Some(o) => (200, o.clone()),
                None => status_error(404, "NotFound", format!("{path} not found")),
            },
            ("DELETE", false) => match objects.remove(&path) {
                Some(o) => (200, o),
                None => status_error(404, "NotFound", format!("{path} not found")),
            },
            ("PATCH", false) => match objects.get_mut(&path) {
                Some(o) => {
                    if subresource {
                        merge(&mut o["status"], &body["status"]);
                    } else {
                        let mut patch = body.clone();
                        if let Some(p) = patch.as_object_mut() {
                            p.remove("status");
                        }
                        merge(o, &patch);
                    }
                    o["metadata"]["resourceVersion"] = json!(self.next_version());
                    (200, o.clone())
                }
                None => status_error(404, "NotFound", format!("{path} not found")),
            },
            _ => status_error(405, "MethodNotAllowed", format!("{method} {path}")),
        }
    }

    /// Refuses every POST to `collection` with `code` (as the API server refuses an invalid pod).
    #[allow(dead_code)]
    pub fn reject_posts(&self, collection: &str, code: u16, message: &str) {
        *self.reject_posts.lock().unwrap() = Some((collection.to_string(), code, message.to_string()));
    }

    /// Stores an object directly (as if another actor created it).
    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn remove(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().remove(path)
    }

    /// Merges `patch` into a stored object (e.g. a pod's status, as the kubelet would).
    pub fn update(&self, path: &str, patch: Value) {
        let mut objects = self.objects.lock().unwrap();
        let object = objects.get_mut(path).unwrap_or_else(|| panic!("{path} not stored"));
        merge(object, &patch);
    }

    pub fn keys_under(&self, collection: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.rsplit_once('/').is_some_and(|(c, _)| c == collection))
            .cloned()
            .collect()
    }

    /// Drains the request log.
    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Requests that change something (everything but GET).
pub fn writes(log: &[Logged]) -> Vec<String> {
    log.iter().filter(|l| l.method != "GET").map(|l| format!("{} {}", l.method, l.path)).collect()
}
