//! The PS's Prometheus metrics. Labels come only from bounded sets: worker rank, a fixed
//! reason or outcome enum, a fixed phase name. Never a step, pod name, IP or UID.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::ingest::Rejection;

pub struct Metrics {
    pub registry: Registry,
    pub steps: IntCounter,
    pub step: IntGauge,
    pub step_phase_seconds: HistogramVec,
    pub step_seconds: Histogram,
    pub gradient_bytes: IntCounter,
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
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    pub fn new(workers: usize, redundancy: usize) -> Metrics {
        let registry = Registry::new();
        let reg = |m: Box<dyn prometheus::core::Collector>| registry.register(m).expect("unique metric");
        let steps =
            IntCounter::new("draco_steps_total", "Training steps completed by the parameter server").expect("metric");
        reg(Box::new(steps.clone()));
        let step = IntGauge::new("draco_step", "Current training step").expect("metric");
        reg(Box::new(step.clone()));
        let buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let step_phase_seconds = HistogramVec::new(
            HistogramOpts::new(
                "draco_step_phase_seconds",
                "Time spent per step in each phase: wait (for gradients), decode, update, eval, checkpoint",
            )
            .buckets(buckets.clone()),
            &["phase"],
        )
        .expect("metric");
        reg(Box::new(step_phase_seconds.clone()));
        let step_seconds = Histogram::with_opts(
            HistogramOpts::new("draco_step_seconds", "Wall time of one whole training step").buckets(buckets),
        )
        .expect("metric");
        reg(Box::new(step_seconds.clone()));
        let gradient_bytes =
            IntCounter::new("draco_gradient_bytes_total", "Coded gradient bytes accepted by the parameter server")
                .expect("metric");
        reg(Box::new(gradient_bytes.clone()));
        let messages = counter_vec(
            &registry,
            "draco_gradient_messages_total",
            "Coded gradient messages accepted, by worker",
            &["worker"],
        );
        let rejected = counter_vec(
            &registry,
            "draco_rejected_messages_total",
            "Gradient or fetch requests rejected, by reason",
            &["reason"],
        );
        let decode_outcomes =
            counter_vec(&registry, "draco_decode_outcomes_total", "Steps by decode outcome", &["outcome"]);
        let suspects = counter_vec(
            &registry,
            "draco_suspects_total",
            "Times a worker was named a suspect, by worker and reason",
            &["worker", "reason"],
        );
        let missing = counter_vec(
            &registry,
            "draco_missing_total",
            "Times a worker's message was missing when its step was decoded (straggler or dead)",
            &["worker"],
        );
        let train_loss =
            Gauge::new("draco_train_loss", "Training loss of the last step (from the workers judged honest)")
                .expect("metric");
        reg(Box::new(train_loss.clone()));
        let test_loss = Gauge::new("draco_test_loss", "Loss on the test split at the last evaluation").expect("metric");
        reg(Box::new(test_loss.clone()));
        let test_accuracy =
            Gauge::new("draco_test_accuracy_ratio", "Accuracy on the test split at the last evaluation (0-1)")
                .expect("metric");
        reg(Box::new(test_accuracy.clone()));
        let resumed_from_step = IntGauge::new(
            "draco_resumed_from_step",
            "Step of the checkpoint this PS process resumed from (0 for a fresh start)",
        )
        .expect("metric");
        reg(Box::new(resumed_from_step.clone()));
        let checkpoints = IntCounter::new("draco_checkpoints_total", "Checkpoints written").expect("metric");
        reg(Box::new(checkpoints.clone()));
        let workers_gauge = IntGauge::new("draco_workers", "Workers in the job (P)").expect("metric");
        reg(Box::new(workers_gauge.clone()));
        workers_gauge.set(workers as i64);
        let redundancy_gauge =
            IntGauge::new("draco_redundancy", "Workers computing each partition (r)").expect("metric");
        reg(Box::new(redundancy_gauge.clone()));
        redundancy_gauge.set(redundancy as i64);
        // Pre-create the bounded label values so dashboards see zeros instead of nothing.
        for reason in Rejection::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        for outcome in ["decoded", "undecodable", "bound_violated"] {
            decode_outcomes.with_label_values(&[outcome]);
        }
        for w in 0..workers {
            let w = w.to_string();
            messages.with_label_values(&[&w]);
            missing.with_label_values(&[&w]);
        }
        Metrics {
            registry,
            steps,
            step,
            step_phase_seconds,
            step_seconds,
            gradient_bytes,
            messages,
            rejected,
            decode_outcomes,
            suspects,
            missing,
            train_loss,
            test_loss,
            test_accuracy,
            resumed_from_step,
            checkpoints,
            workers: workers_gauge,
            redundancy: redundancy_gauge,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("utf-8 metrics")
    }
}
