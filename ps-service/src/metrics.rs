//! The PS's Prometheus metrics (catalogue: docs/metrics.md). Labels come only from bounded
//! sets: worker rank, a fixed reason or outcome enum, a fixed phase name. Never a step, pod
//! name, IP or UID.

use draco_core::{StepVerdict, SuspectReason};
use draco_metrics::prometheus::{Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use draco_metrics::{MetricSet, SECONDS_BUCKETS};

use crate::ingest::Rejection;

/// Values of `draco_step_phase_seconds{phase}`.
pub const STEP_PHASES: [&str; 5] = ["wait", "decode", "update", "eval", "checkpoint"];

pub struct Metrics {
    pub set: MetricSet,
    pub steps: IntCounter,
    pub step: IntGauge,
    pub step_phase_seconds: HistogramVec,
    pub step_seconds: Histogram,
    pub gradient_bytes: IntCounter,
    pub pushes_in_flight: IntGauge,
    pub messages: IntCounterVec,
    pub rejected: IntCounterVec,
    pub decode_outcomes: IntCounterVec,
    pub suspects: IntCounterVec,
    pub missing: IntCounterVec,
    pub train_loss: Gauge,
    pub test_loss: Gauge,
    pub test_accuracy: Gauge,
    pub resumed_from_step: IntGauge,
    pub checkpoints: IntCounter,
    pub workers: IntGauge,
    pub redundancy: IntGauge,
    pub total_steps: IntGauge,
    pub start_time: Gauge,
}

impl Metrics {
    pub fn new(workers: usize, redundancy: usize, total_steps: u64) -> Metrics {
        let mut set = MetricSet::new();
        let m = Metrics {
            steps: set.counter("draco_steps_total", "Training steps completed by the parameter server"),
            step: set.int_gauge("draco_step", "Current training step"),
            step_phase_seconds: set.histogram_vec(
                "draco_step_phase_seconds",
                "Time spent per step in each phase: wait (for gradients), decode, update, eval, checkpoint",
                &["phase"],
                &SECONDS_BUCKETS,
            ),
            step_seconds: set.histogram("draco_step_seconds", "Wall time of one whole training step", &SECONDS_BUCKETS),
            gradient_bytes: set
                .counter("draco_gradient_bytes_total", "Coded gradient bytes accepted by the parameter server"),
            pushes_in_flight: set.int_gauge(
                "draco_pushes_in_flight",
                "Gradient pushes still receiving chunks (at most two per worker: one before its checks, one past them)",
            ),
            messages: set.counter_vec(
                "draco_gradient_messages_total",
                "Coded gradient messages accepted, by worker",
                &["worker"],
            ),
            rejected: set.counter_vec(
                "draco_rejected_messages_total",
                "Gradient or fetch requests rejected, by reason",
                &["reason"],
            ),
            decode_outcomes: set.counter_vec("draco_decode_outcomes_total", "Steps by decode outcome", &["outcome"]),
            suspects: set.counter_vec(
                "draco_suspects_total",
                "Times a worker was named a suspect, by worker and reason",
                &["worker", "reason"],
            ),
            missing: set.counter_vec(
                "draco_missing_total",
                "Times a worker's message was missing when its step was decoded (straggler or dead)",
                &["worker"],
            ),
            train_loss: set
                .gauge("draco_train_loss", "Training loss of the last step (from the workers judged honest)"),
            test_loss: set.gauge("draco_test_loss", "Loss on the test split at the last evaluation"),
            test_accuracy: set
                .gauge("draco_test_accuracy_ratio", "Accuracy on the test split at the last evaluation (0-1)"),
            resumed_from_step: set.int_gauge(
                "draco_resumed_from_step",
                "Step of the checkpoint this PS process resumed from (0 for a fresh start)",
            ),
            checkpoints: set.counter("draco_checkpoints_total", "Checkpoints written"),
            workers: set.int_gauge("draco_workers", "Workers in the job (P)"),
            redundancy: set.int_gauge("draco_redundancy", "Workers computing each partition (r)"),
            total_steps: set.int_gauge("draco_total_steps", "Steps the job trains in total"),
            start_time: set.start_time(),
            set,
        };
        m.workers.set(workers as i64);
        m.redundancy.set(redundancy as i64);
        m.total_steps.set(total_steps as i64);
        // Pre-create the bounded label values so dashboards and alerts see zeros instead of
        // nothing (rate() and increase() need a series to exist before its first event).
        for reason in Rejection::ALL {
            m.rejected.with_label_values(&[reason.as_str()]);
        }
        for outcome in [StepVerdict::Decoded, StepVerdict::Undecodable, StepVerdict::BoundViolated] {
            m.decode_outcomes.with_label_values(&[outcome.as_str()]);
        }
        for phase in STEP_PHASES {
            m.step_phase_seconds.with_label_values(&[phase]);
        }
        for w in 0..workers {
            let w = w.to_string();
            m.messages.with_label_values(&[&w]);
            m.missing.with_label_values(&[&w]);
            // P x 4 series: without them the first lie of a worker would go unseen by
            // increase() (a series that is born at 1 has not increased).
            for reason in SuspectReason::ALL {
                m.suspects.with_label_values(&[&w, reason.as_str()]);
            }
        }
        m
    }

    pub fn render(&self) -> String {
        self.set.render()
    }
}
