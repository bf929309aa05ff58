//! The worker's Prometheus metrics (catalogue: docs/metrics.md). No label carries the rank:
//! one worker process is one scrape target, and the rank comes from the target's labels
//! (`worker` in `draco run --prometheus-sd`, the pod's replica index on a cluster).

use draco_metrics::prometheus::{Gauge, HistogramVec, IntCounter, IntGauge};
use draco_metrics::{MetricSet, SECONDS_BUCKETS};

/// Values of `draco_worker_step_phase_seconds{phase}`, in the order a step goes through them.
pub const WORKER_PHASES: [&str; 4] = ["fetch", "compute", "encode", "send"];

pub struct WorkerMetrics {
    pub set: MetricSet,
    pub phase_seconds: HistogramVec,
    pub step: IntGauge,
    pub sent_bytes: IntCounter,
    pub sent_messages: IntCounter,
    pub forged_messages: IntCounter,
    pub reconnects: IntCounter,
    pub train_loss: Gauge,
    pub start_time: Gauge,
}

impl WorkerMetrics {
    pub fn new() -> WorkerMetrics {
        let mut set = MetricSet::new();
        let m = WorkerMetrics {
            phase_seconds: set.histogram_vec(
                "draco_worker_step_phase_seconds",
                "Time per step in each phase: fetch (waiting for and receiving the step's parameters), compute (gradients), encode (code, drill \
                 forgery, wire format), send (stream to the PS)",
                &["phase"],
                &SECONDS_BUCKETS,
            ),
            step: set.int_gauge("draco_worker_step", "Step of the last gradient this worker delivered"),
            sent_bytes: set
                .counter("draco_worker_sent_bytes_total", "Coded gradient payload bytes delivered to the PS"),
            sent_messages: set.counter(
                "draco_worker_sent_messages_total",
                "Coded gradient messages (one per step, all its chunks) the PS accepted",
            ),
            forged_messages: set.counter(
                "draco_worker_forged_messages_total",
                "Messages this worker forged because the adversary drill picked it (0 outside drills)",
            ),
            reconnects: set.counter(
                "draco_worker_reconnects_total",
                "Times this worker lost the PS (restart, network) and joined again",
            ),
            train_loss: set.gauge("draco_worker_train_loss", "Training loss on this worker's partitions, last step"),
            start_time: set.start_time(),
            set,
        };
        for phase in WORKER_PHASES {
            m.phase_seconds.with_label_values(&[phase]);
        }
        m
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics::new()
    }
}
