//! draco-ps: the parameter server. Publishes parameters, gathers coded gradients until the
//! code can decode (or the straggler timeout fires), decodes with draco-core, applies the
//! optimizer, evaluates, checkpoints, and reports everything on HTTP.

pub mod checkpoint;
pub mod http;
pub mod ingest;
pub mod metrics;
mod round;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use draco_core::decoder::StepDecoder;
use draco_core::job::JobConfig;
use draco_core::optimizer::Optimizer;
use draco_core::{Outcome, StepVerdict, WorkerVerdict};
use draco_model::{Evaluator, Split};
use tokio::sync::{Notify, watch};

use checkpoint::Checkpoint;
use draco_core::status::{Phase, Status, params_digest};
use metrics::Metrics;
use round::Round;

/// Largest gRPC message accepted: a chunk is 1 MiB of payload; leave room for framing.
const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;
/// How many decoded rounds stay in memory to judge vectors that arrive late (a worker that
/// fell behind while others decided for it). Costs up to this many rounds of messages.
pub const LATE_ROUNDS: usize = 4;
/// The status written beside each checkpoint.
const STATUS_FILE: &str = "status.json";

pub struct PsOptions {
    pub job: JobConfig,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// One secret token per rank.
    pub tokens: Vec<String>,
    pub checkpoint_dir: Option<PathBuf>,
    /// How long to keep serving after the last step so workers learn the job is over.
    pub linger: Duration,
}

/// The parameters workers fetch for a step.
#[derive(Clone, Debug)]
pub struct Published {
    pub step: u64,
    pub params: Arc<Vec<f32>>,
    pub finished: bool,
}

/// State shared by the gRPC service, the HTTP endpoints and the step loop.
pub struct Shared {
    pub tokens: Vec<String>,
    pub incarnation: String,
    pub message_len: usize,
    pub param_count: usize,
    pub layout_digest: u64,
    pub metrics: Metrics,
    pub published: watch::Sender<Published>,
    pub(crate) round: Mutex<Round>,
    /// The last few decoded rounds, kept so vectors arriving late can still be judged.
    pub(crate) previous: Mutex<std::collections::VecDeque<Round>>,
    pub arrivals: Notify,
    pub status: Mutex<Status>,
    pub ready: AtomicBool,
    /// Message buffers of evicted rounds, reused for new messages: a fresh buffer costs a page
    /// fault per 4 KiB (or a memset) before the first byte lands, more than copying into it.
    spare_buffers: Mutex<Vec<Vec<f32>>>,
    /// Per rank, the pushes that started and passed their checks: a newer push from a rank
    /// replaces its older one still in flight (see [`ingest::PushClaim`]).
    pub(crate) push_generations: Vec<watch::Sender<ingest::PushGenerations>>,
}

impl Shared {
    /// A buffer of `message_len` values whose contents are arbitrary: the caller overwrites
    /// every value before the message is used (a push that fills less is refused). Unless
    /// kept, it goes back to the spares when dropped (a refused push costs no allocation).
    pub(crate) fn message_buffer(&self) -> MessageBuffer<'_> {
        let spare = self.spare_buffers.lock().expect("spare buffers lock").pop();
        MessageBuffer { shared: self, values: spare.unwrap_or_else(|| vec![0.0; self.message_len]) }
    }

    /// Keeps up to one round's worth of `buffers` for later messages: a step evicts one round
    /// and the next gathers one, so more would only hold memory.
    fn recycle(&self, buffers: impl Iterator<Item = Vec<f32>>) {
        let mut spare = self.spare_buffers.lock().expect("spare buffers lock");
        let room = self.tokens.len().saturating_sub(spare.len());
        spare.extend(buffers.filter(|b| b.len() == self.message_len).take(room));
    }
}

/// A message buffer on loan from [`Shared`]'s spares.
pub(crate) struct MessageBuffer<'a> {
    shared: &'a Shared,
    values: Vec<f32>,
}

impl MessageBuffer<'_> {
    pub(crate) fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    /// The buffer, no longer returned on drop.
    pub(crate) fn keep(mut self) -> Vec<f32> {
        std::mem::take(&mut self.values)
    }
}

impl Drop for MessageBuffer<'_> {
    fn drop(&mut self) {
        if !self.values.is_empty() {
            self.shared.recycle(std::iter::once(std::mem::take(&mut self.values)));
        }
    }
}

/// Runs the PS until the job's last step is done (then lingers) or `shutdown` resolves.
pub async fn run(
    opts: PsOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Status> {
    let job = opts.job.clone();
    job.validate().context("invalid job")?;
    anyhow::ensure!(
        opts.tokens.len() == job.scheme.workers,
        "{} tokens for {} workers",
        opts.tokens.len(),
        job.scheme.workers
    );
    let architecture = draco_model::architecture(&job.model);
    let test_set = draco_model::load_dataset(&job.dataset, Split::Test, job.training.seed)?;
    let (initial, layout) =
        draco_model::initial_parameters(&architecture, test_set.shape, test_set.classes, job.training.seed);
    let dim = initial.len();
    let message_len = StepDecoder::message_len(job.scheme.code, dim);
    let decoder = Arc::new(StepDecoder::new(&job.scheme, job.aggregator, dim)?);
    let mut optimizer = Optimizer::new(&job.training.optimizer, dim);
    let mut params = initial;
    let mut step = 0;
    let mut restored_status = None;
    if let Some(dir) = &opts.checkpoint_dir
        && let Some(ck) = Checkpoint::load(dir, dim).map_err(anyhow::Error::msg)?
    {
        anyhow::ensure!(
            ck.layout_digest == layout.digest(),
            "{}: checkpoint of a different model",
            checkpoint::path(dir).display()
        );
        optimizer.restore(ck.optimizer_first, ck.optimizer_second, ck.optimizer_updates).map_err(anyhow::Error::msg)?;
        params = ck.params;
        step = ck.step;
        tracing::info!(step, "resumed from checkpoint");
        restored_status =
            std::fs::read(dir.join(STATUS_FILE)).ok().and_then(|b| serde_json::from_slice::<Status>(&b).ok());
    }
    let metrics = Metrics::new(job.scheme.workers, job.scheme.redundancy, job.training.steps);
    metrics.resumed_from_step.set(step as i64);
    metrics.step.set(step as i64);
    let incarnation = draco_core::secret::random_hex(8);
    let fresh = Status {
        job: job.name.clone(),
        phase: Phase::Starting,
        message: String::new(),
        incarnation: incarnation.clone(),
        step,
        total_steps: job.training.steps,
        loss: None,
        test_loss: None,
        test_accuracy: None,
        steps_per_second: 0.0,
        resumed_from_step: step,
        detections_total: 0,
        suspects: Vec::new(),
        decoded_steps: 0,
        undecodable_steps: 0,
        bound_violated_steps: 0,
        missing: Default::default(),
        params_digest: params_digest(&params),
        params_count: dim,
    };
    // A resumed PS keeps the job's history (suspects, counts, last evaluation).
    let status = match restored_status {
        Some(old) if old.step == step => {
            Status { phase: Phase::Starting, incarnation: fresh.incarnation.clone(), resumed_from_step: step, ..old }
        }
        _ => fresh,
    };
    let finished = step >= job.training.steps;
    let (published, _) = watch::channel(Published { step, params: Arc::new(params.clone()), finished });
    let shared = Arc::new(Shared {
        tokens: opts.tokens.clone(),
        incarnation,
        message_len,
        param_count: dim,
        layout_digest: layout.digest(),
        metrics,
        published,
        round: Mutex::new(Round::new(step, &job.scheme, message_len)),
        previous: Mutex::new(std::collections::VecDeque::new()),
        arrivals: Notify::new(),
        status: Mutex::new(status),
        ready: AtomicBool::new(false),
        spare_buffers: Mutex::new(Vec::new()),
        push_generations: opts.tokens.iter().map(|_| watch::channel(Default::default()).0).collect(),
    });

    let grpc_listener = tokio::net::TcpListener::bind(opts.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", opts.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(opts.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", opts.http_addr))?;
    tracing::info!(grpc = %grpc_listener.local_addr()?, http = %http_listener.local_addr()?, "parameter server listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = ingest::Routes::new(ingest::Service { shared: shared.clone() }, MAX_GRPC_MESSAGE);
    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(16 * 1024 * 1024)
            .initial_connection_window_size(32 * 1024 * 1024)
            // Frames as large as a chunk: fewer, larger HTTP/2 frames per gradient.
            .max_frame_size(draco_proto::MAX_FRAME)
            // A worker uses at most three streams at once (join, fetch, push); the limit keeps
            // one connection from holding thousands of waiting calls.
            .max_concurrent_streams(32)
            // Peers that vanish without closing (a dead node, a cut network) are found by
            // pings and their calls end, instead of holding their tasks and buffers forever.
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(service)
            // Our own listener (bound above, so a bad address fails before anything starts); tonic
            // ignores its TCP settings for such listeners, so TCP_NODELAY is set here: without it a
            // small reply behind a large write waits for the peer's delayed ACK.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                },
            ),
    );
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(http_listener, http::router(shared.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    shared.ready.store(true, Ordering::Release);

    let mut evaluator = Evaluator::new(&architecture, test_set.shape, test_set.classes);
    let test_set = Arc::new(test_set);
    let stepper = StepLoop { job: &job, shared: &shared, decoder, checkpoint_dir: opts.checkpoint_dir.clone() };
    let result = tokio::select! {
        r = stepper.run(params, optimizer, step, &mut evaluator, &test_set) => r,
        _ = shutdown => Err(anyhow::anyhow!("interrupted")),
    };
    {
        let mut st = shared.status.lock().expect("status lock");
        match &result {
            Ok(()) => {
                st.phase = Phase::Succeeded;
                st.message = format!("trained {} steps", job.training.steps);
            }
            Err(e) => {
                st.phase = Phase::Failed;
                st.message = format!("{e:#}");
            }
        }
    }
    if result.is_ok() {
        tokio::time::sleep(opts.linger).await;
    }
    let _ = stop_tx.send(true);
    let _ = grpc.await;
    let _ = http.await;
    let status = shared.status.lock().expect("status lock").clone();
    result.map(|()| status)
}

struct StepLoop<'a> {
    job: &'a JobConfig,
    shared: &'a Arc<Shared>,
    decoder: Arc<StepDecoder>,
    checkpoint_dir: Option<PathBuf>,
}

impl StepLoop<'_> {
    async fn run(
        &self,
        mut params: Vec<f32>,
        mut optimizer: Optimizer,
        mut step: u64,
        evaluator: &mut Evaluator,
        test_set: &Arc<draco_model::Dataset>,
    ) -> anyhow::Result<()> {
        let (shared, job) = (self.shared, self.job);
        let timeout = Duration::from_secs_f64(job.straggler_timeout_seconds);
        let started = Instant::now();
        let first_step = step;
        let m = &shared.metrics;
        while step < job.training.steps {
            let step_started = Instant::now();
            {
                let mut st = shared.status.lock().expect("status lock");
                st.phase = Phase::Running;
            }
            // Gather until the code can decode, trying what arrived at every timeout.
            let mut deadline = tokio::time::Instant::now() + timeout;
            let (outcome, timed_out) = loop {
                let notified = shared.arrivals.notified();
                let ready = shared.round.lock().expect("round lock").ready();
                let timed_out = tokio::time::Instant::now() >= deadline;
                if ready || timed_out {
                    let outcome = self.decode().await;
                    let retry = matches!(outcome.verdict(), StepVerdict::Undecodable) && !outcome.missing().is_empty();
                    if !retry {
                        break (outcome, timed_out && !ready);
                    }
                    let missing = outcome.missing();
                    tracing::warn!(step, ?missing, "step {step} not decodable yet: waiting for more workers");
                    shared.status.lock().expect("status lock").message = format!(
                        "step {step}: waiting for workers {missing:?} ({})",
                        outcome.aggregate.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                    );
                    deadline = tokio::time::Instant::now() + timeout;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            };
            let waited = step_started.elapsed();
            m.step_phase_seconds.with_label_values(&["wait"]).observe(waited.as_secs_f64());
            m.decode_outcomes.with_label_values(&[outcome.verdict().as_str()]).inc();
            for (w, verdict) in outcome.workers.iter().enumerate() {
                match verdict {
                    WorkerVerdict::Suspect(reason) => {
                        m.suspects.with_label_values(&[&w.to_string(), reason.as_str()]).inc()
                    }
                    // Early decoding leaves slow members out on purpose; only a step decided
                    // at the straggler timeout counts its absentees as stragglers.
                    WorkerVerdict::Missing if timed_out => m.missing.with_label_values(&[&w.to_string()]).inc(),
                    _ => {}
                }
            }
            // Close the round: late pushes for this step are now stale.
            let closed = std::mem::replace(
                &mut *shared.round.lock().expect("round lock"),
                Round::new(step + 1, &job.scheme, shared.message_len),
            );
            let losses = closed.losses.clone();
            // Vectors that arrived between the decode and the close were not in the decoded
            // snapshot: judge them now, like any late vector.
            let judged_late: Vec<(usize, WorkerVerdict)> = (0..job.scheme.workers)
                .filter(|&w| outcome.workers[w] == WorkerVerdict::Missing && closed.has(w))
                .filter_map(|w| closed.verdict_of(w).map(|v| (w, v)))
                .collect();
            {
                let mut previous = shared.previous.lock().expect("previous round lock");
                previous.push_back(closed);
                if previous.len() > LATE_ROUNDS
                    && let Some(evicted) = previous.pop_front()
                {
                    shared.recycle(evicted.into_buffers());
                }
            }
            let train_loss = self.train_loss(&outcome, &losses);
            let update_started = Instant::now();
            match &outcome.aggregate {
                Ok(gradient) => optimizer.apply(&mut params, gradient),
                // Proven lies beyond the bound: nothing trustworthy to apply. The step is
                // skipped (parameters unchanged) and reported; training goes on.
                Err(failure) => tracing::error!(step, "{failure}; step skipped"),
            }
            m.step_phase_seconds.with_label_values(&["update"]).observe(update_started.elapsed().as_secs_f64());
            step += 1;
            let evaluate = step == job.training.steps
                || (job.training.eval_every_steps > 0 && step.is_multiple_of(job.training.eval_every_steps));
            let evaluation = if evaluate {
                let t = Instant::now();
                let e = evaluator.evaluate(&params, test_set);
                m.step_phase_seconds.with_label_values(&["eval"]).observe(t.elapsed().as_secs_f64());
                m.test_loss.set(f64::from(e.loss));
                m.test_accuracy.set(f64::from(e.accuracy));
                tracing::info!(step, accuracy = e.accuracy, loss = e.loss, "evaluated");
                Some(e)
            } else {
                None
            };
            {
                let mut st = shared.status.lock().expect("status lock");
                st.record(step - 1, &outcome, timed_out);
                for (w, verdict) in &judged_late {
                    if let WorkerVerdict::Suspect(reason) = verdict {
                        st.name_suspect(step - 1, *w, reason.as_str());
                        m.suspects.with_label_values(&[&w.to_string(), reason.as_str()]).inc();
                    }
                }
                match outcome.verdict() {
                    StepVerdict::Decoded => st.decoded_steps += 1,
                    StepVerdict::Undecodable => st.undecodable_steps += 1,
                    StepVerdict::BoundViolated => st.bound_violated_steps += 1,
                }
                st.step = step;
                if let Some(l) = train_loss {
                    st.loss = Some(l);
                    m.train_loss.set(f64::from(l));
                }
                if let Some(e) = evaluation {
                    st.test_loss = Some(e.loss);
                    st.test_accuracy = Some(e.accuracy);
                }
                st.steps_per_second = (step - first_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                st.params_digest = params_digest(&params);
                st.message.clear();
            }
            if let Some(dir) = &self.checkpoint_dir
                && (step == job.training.steps
                    || (job.checkpoint.every_steps > 0 && step.is_multiple_of(job.checkpoint.every_steps)))
            {
                let t = Instant::now();
                let (first, second) = optimizer.state();
                let ck = Checkpoint {
                    step,
                    layout_digest: shared.layout_digest,
                    params: params.clone(),
                    optimizer_first: first.to_vec(),
                    optimizer_second: second.to_vec(),
                    optimizer_updates: optimizer.updates(),
                };
                let dir = dir.clone();
                let status = serde_json::to_vec_pretty(&*shared.status.lock().expect("status lock"))?;
                tokio::task::spawn_blocking(move || {
                    // Status first: a checkpoint never points past the history it comes with.
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join(STATUS_FILE), status)?;
                    ck.save(&dir)
                })
                .await?
                .context("writing checkpoint")?;
                m.checkpoints.inc();
                m.step_phase_seconds.with_label_values(&["checkpoint"]).observe(t.elapsed().as_secs_f64());
            }
            m.steps.inc();
            m.step.set(step as i64);
            m.step_seconds.observe(step_started.elapsed().as_secs_f64());
            shared.published.send_replace(Published {
                step,
                params: Arc::new(params.clone()),
                finished: step >= job.training.steps,
            });
        }
        Ok(())
    }

    /// Decodes the current round's messages on a blocking thread.
    async fn decode(&self) -> Outcome<f32> {
        // A snapshot of pointers: vectors arriving meanwhile go into the round, not this decode.
        let messages: Vec<Option<Arc<Vec<f32>>>> = self.shared.round.lock().expect("round lock").messages.clone();
        let decoder = self.decoder.clone();
        let t = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let slots: Vec<Option<&[f32]>> = messages.iter().map(|m| m.as_deref().map(Vec::as_slice)).collect();
            decoder.decode(&slots)
        })
        .await
        .expect("decoder thread");
        self.shared.metrics.step_phase_seconds.with_label_values(&["decode"]).observe(t.elapsed().as_secs_f64());
        outcome
    }

    /// The batch's mean training loss estimated from the losses honest workers reported: each
    /// reports the loss of the r partitions it computed, so P reports count every partition r
    /// times.
    fn train_loss(&self, outcome: &Outcome<f32>, losses: &[Option<f32>]) -> Option<f32> {
        let honest: Vec<f32> = outcome
            .workers
            .iter()
            .zip(losses)
            .filter(|(v, _)| **v == WorkerVerdict::Honest)
            .filter_map(|(_, l)| *l)
            .collect();
        if honest.is_empty() {
            return None;
        }
        let scheme = &self.job.scheme;
        Some(honest.iter().sum::<f32>() * scheme.workers as f32 / honest.len() as f32 / scheme.redundancy as f32)
    }
}

/// A PS running in this process on free loopback ports (benchmarks and tests).
pub struct LoopbackPs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Status>>,
}

impl LoopbackPs {
    /// Starts `job` with these tokens, no checkpoints, on 127.0.0.1.
    pub fn start(job: JobConfig, tokens: Vec<String>) -> anyhow::Result<LoopbackPs> {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let (grpc, http) = (free()?, free()?);
        let opts = PsOptions {
            job,
            grpc_addr: grpc,
            http_addr: http,
            tokens,
            checkpoint_dir: None,
            linger: Duration::from_millis(100),
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(opts, async move {
            let _ = stop_rx.await;
        }));
        Ok(LoopbackPs { grpc, http, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
