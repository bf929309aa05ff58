//! The operator's own metrics (names fixed in docs/metrics.md; the operator dashboard reads them).

use draco_metrics::MetricSet;
use draco_metrics::prometheus::{Histogram, IntCounterVec, IntGaugeVec};

/// Every value `draco_operator_jobs{phase}` takes (the job states of `kubectl get dj`).
pub const PHASES: [&str; 7] = ["Pending", "Created", "Running", "Restarting", "Suspended", "Succeeded", "Failed"];

pub struct OperatorMetrics {
    pub set: MetricSet,
    pub reconciles: IntCounterVec,
    pub reconcile_seconds: Histogram,
    pub jobs: IntGaugeVec,
}

impl OperatorMetrics {
    pub fn new() -> OperatorMetrics {
        let mut set = MetricSet::new();
        let reconciles = set.counter_vec(
            "draco_operator_reconciles_total",
            "DracoJob reconciles, by result (success or error)",
            &["result"],
        );
        let reconcile_seconds = set.histogram(
            "draco_operator_reconcile_duration_seconds",
            "Wall time of one DracoJob reconcile",
            &draco_metrics::SECONDS_BUCKETS,
        );
        let jobs = set.int_gauge_vec("draco_operator_jobs", "DracoJobs by phase", &["phase"]);
        for result in ["success", "error"] {
            reconciles.with_label_values(&[result]);
        }
        for phase in PHASES {
            jobs.with_label_values(&[phase]).set(0);
        }
        OperatorMetrics { set, reconciles, reconcile_seconds, jobs }
    }

    /// Sets the per-phase job counts from the states of every known job.
    pub fn count_jobs<'a>(&self, states: impl Iterator<Item = &'a str>) {
        let mut counts = [0i64; PHASES.len()];
        for state in states {
            if let Some(i) = PHASES.iter().position(|p| *p == state) {
                counts[i] += 1;
            }
        }
        for (phase, count) in PHASES.iter().zip(counts) {
            self.jobs.with_label_values(&[phase]).set(count);
        }
    }
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
