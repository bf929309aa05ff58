//! draco-metrics: how Draco's processes (PS, workers, operator) declare Prometheus metrics and
//! serve them. Every metric is declared through a [`MetricSet`], which also keeps a catalogue
//! (name, type, label names, help) so a test can hold `docs/metrics.md` to what the code
//! really exports, and which refuses names and labels that break the project's conventions.

use std::net::SocketAddr;

use anyhow::Context;
pub use prometheus;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The Prometheus text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Label names that would make series unbounded (one per step, pod, address or object):
/// refused at declaration, so a careless label fails the first test that builds the set.
const FORBIDDEN_LABELS: [&str; 7] = ["step", "pod", "pod_name", "ip", "uid", "instance", "job"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The `# TYPE` word of the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One declared metric family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub kind: Kind,
    pub labels: Vec<String>,
    pub help: String,
}

/// A registry plus the catalogue of what was declared in it.
#[derive(Default)]
pub struct MetricSet {
    registry: Registry,
    catalogue: Vec<Declared>,
}

impl MetricSet {
    pub fn new() -> MetricSet {
        MetricSet::default()
    }

    /// Declared families in declaration order.
    pub fn catalogue(&self) -> &[Declared] {
        &self.catalogue
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Checks conventions, registers, records. Panics on a programming error (bad name, a
    /// forbidden label, a duplicate), like the prometheus crate's own constructors.
    fn add<C: Collector + Clone + 'static>(&mut self, c: C, name: &str, kind: Kind, labels: &[&str], help: &str) -> C {
        assert!(name.starts_with("draco_"), "metric {name}: Draco metrics start with draco_");
        assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "metric {name}: counters, and only counters, end in _total"
        );
        for l in labels {
            assert!(!FORBIDDEN_LABELS.contains(l), "metric {name}: label {l:?} is unbounded or reserved");
        }
        self.registry.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.catalogue.push(Declared {
            name: name.to_string(),
            kind,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            help: help.to_string(),
        });
        c
    }

    pub fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::new(name, help).expect("valid counter");
        self.add(c, name, Kind::Counter, &[], help)
    }

    pub fn counter_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        self.add(c, name, Kind::Counter, labels, help)
    }

    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let g = Gauge::new(name, help).expect("valid gauge");
        self.add(g, name, Kind::Gauge, &[], help)
    }

    pub fn int_gauge(&mut self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(name, help).expect("valid gauge");
        self.add(g, name, Kind::Gauge, &[], help)
    }

    pub fn int_gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        self.add(g, name, Kind::Gauge, labels, help)
    }

    pub fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let h =
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid histogram");
        self.add(h, name, Kind::Histogram, &[], help)
    }

    pub fn histogram_vec(&mut self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
            .expect("valid histogram");
        self.add(h, name, Kind::Histogram, labels, help)
    }

    /// `draco_start_time_seconds`, set to now: a change of its value is a process restart,
    /// which dashboards count with `changes()`.
    pub fn start_time(&mut self) -> Gauge {
        let g = self.gauge("draco_start_time_seconds", "Unix time this process started (a change means a restart)");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        g.set(now.as_secs_f64());
        g
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("utf-8 metrics")
    }
}

/// Buckets for durations from a millisecond to half a minute (step phases, compute, sends).
pub const SECONDS_BUCKETS: [f64; 13] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A router with `/metrics` and `/healthz` for processes that serve nothing else over HTTP;
/// `render` gives the current exposition (e.g. `MetricSet::render` of a shared set).
pub fn router(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    use axum::http::header;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let render = render.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
}

/// Binds `addr` now (so a taken port is an error at start, not a silent gap in the graphs) and
/// serves [`router`] in the background until the runtime ends. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(render)).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_records_every_declaration() {
        let mut set = MetricSet::new();
        let c = set.counter_vec("draco_things_total", "Things", &["worker"]);
        set.histogram("draco_wait_seconds", "Waits", &SECONDS_BUCKETS);
        c.with_label_values(&["1"]).inc_by(3);
        let names: Vec<(&str, Kind)> = set.catalogue().iter().map(|d| (d.name.as_str(), d.kind)).collect();
        assert_eq!(names, [("draco_things_total", Kind::Counter), ("draco_wait_seconds", Kind::Histogram)]);
        let text = set.render();
        assert!(text.contains("draco_things_total{worker=\"1\"} 3"), "{text}");
        assert!(text.contains("# TYPE draco_wait_seconds histogram"), "{text}");
    }

    #[test]
    #[should_panic(expected = "unbounded")]
    fn refuses_a_step_label() {
        MetricSet::new().counter_vec("draco_x_total", "x", &["step"]);
    }

    #[test]
    #[should_panic(expected = "_total")]
    fn refuses_a_counter_without_total() {
        MetricSet::new().counter("draco_x", "x");
    }

    #[test]
    #[should_panic(expected = "_total")]
    fn refuses_a_gauge_named_like_a_counter() {
        MetricSet::new().gauge("draco_x_total", "x");
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let mut set = MetricSet::new();
        set.counter("draco_pings_total", "Pings").inc();
        let set = std::sync::Arc::new(set);
        let addr = serve("127.0.0.1:0".parse().unwrap(), move || set.render()).await.unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
        assert!(metrics.contains("draco_pings_total 1"), "{metrics}");
        assert!(get("/healthz").await.ends_with("ok\n"));
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = serve(taken.local_addr().unwrap(), String::new).await.unwrap_err();
        assert!(format!("{err:#}").contains("binding the metrics endpoint"), "{err:#}");
    }
}
