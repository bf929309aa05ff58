//! draco-operator (`draco operator`): a kube-rs controller that turns each DracoJob into a
//! token Secret, a ConfigMap with the job's runtime config, the PS Service, a NetworkPolicy and
//! the PS and worker pods, and reports progress, conditions and the workers caught lying.
//!
//! `children` builds the desired objects (pure), `plan` decides status and actions (pure),
//! `reconcile` talks to the API server, `ps_status` reads the PS, `metrics` is `/metrics`.

pub mod children;
pub mod metrics;
pub mod plan;
pub mod ps_status;
pub mod reconcile;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use draco_api::DracoJob;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

pub use children::PodDefaults;
use metrics::OperatorMetrics;
use reconcile::Context;

pub struct OperatorOptions {
    /// Watch only this namespace (namespace-scoped install); all namespaces when `None`.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub pod_defaults: PodDefaults,
}

/// Runs the controller until SIGTERM/Ctrl-C.
pub async fn run(opts: OperatorOptions) -> anyhow::Result<()> {
    let client = Client::try_default().await.context("connecting to the Kubernetes API (in-cluster or kubeconfig)")?;
    let metrics = Arc::new(OperatorMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (jobs, pods): (Api<DracoJob>, Api<Pod>) = match &opts.namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let pod_watch = watcher::Config::default().labels(children::LABEL_JOB);
    let controller = Controller::new(jobs.clone(), watcher::Config::default()).owns(pods, pod_watch);
    serve_http(opts.metrics_addr, metrics.clone(), controller.store(), ready.clone()).await?;

    // Fail early and clearly when the CRD is missing or RBAC forbids listing jobs.
    jobs.list(&kube::api::ListParams::default().limit(1))
        .await
        .context("listing DracoJobs: is the CRD installed (crds/) and may this service account list them?")?;
    ready.store(true, Ordering::Release);
    tracing::info!(namespace = opts.namespace.as_deref().unwrap_or("<all>"), "draco operator started");

    let ctx = Arc::new(Context::new(client, opts.pod_defaults, metrics));
    controller
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(job = %object.name, "reconciled"),
                Err(e) => tracing::debug!("reconcile: {e}"),
            }
        })
        .await;
    Ok(())
}

/// `/metrics`, `/healthz` (the process serves) and `/readyz` (the API answered the first list).
/// Jobs by phase are counted from the controller's cache at each scrape, so a deleted job
/// leaves the count when it leaves the cluster.
async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<OperatorMetrics>,
    jobs: Store<DracoJob>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    let render = move || {
        let states = jobs.state();
        metrics.count_jobs(
            states.iter().map(|job| job.status.as_ref().and_then(|s| s.state.as_deref()).unwrap_or("Pending")),
        );
        metrics.set.render()
    };
    let router = draco_metrics::router(render).route(
        "/readyz",
        axum::routing::get(move || {
            let ready = ready.load(Ordering::Acquire);
            async move {
                if ready {
                    (axum::http::StatusCode::OK, "ready\n")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}
