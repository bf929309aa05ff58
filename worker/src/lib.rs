//! draco-worker: joins the PS, and for every step fetches the parameters, computes its coded
//! gradient (compute.rs) and streams it back in chunks. Reconnects with capped backoff; gives
//! up with a clear error after the connect deadline.

pub mod compute;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use draco_core::job::JobConfig;
use draco_model::Split;
use draco_proto::push::GradientPush;
use draco_proto::v1::parameter_server_client::ParameterServerClient;
use draco_proto::v1::{FetchRequest, JoinRequest};
use draco_proto::{AUTH_HEADER, PARAMETERS_REPLACED, RANK_HEADER, refusal};
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use compute::MessageBuilder;
use metrics::WorkerMetrics;

pub struct WorkerOptions {
    pub job: JobConfig,
    pub rank: usize,
    pub token: String,
    /// e.g. `http://127.0.0.1:7000`
    pub ps_addr: String,
    /// Give up when the PS cannot be reached for this long.
    pub connect_deadline: Duration,
    /// Serve `/metrics` and `/healthz` here (port 0: any free port, logged).
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Default)]
pub struct WorkerSummary {
    pub steps: u64,
    pub forged: u64,
    pub reconnects: u64,
}

type Client = ParameterServerClient<InterceptedService<Channel, Credentials>>;

/// Adds this worker's rank and token to every call.
#[derive(Clone)]
pub struct Credentials {
    rank: MetadataValue<tonic::metadata::Ascii>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
}

impl Credentials {
    fn add_to(&self, metadata: &mut MetadataMap) {
        metadata.insert(RANK_HEADER, self.rank.clone());
        metadata.insert(AUTH_HEADER, self.bearer.clone());
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.add_to(request.metadata_mut());
        Ok(request)
    }
}

const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;

async fn connect(opts: &WorkerOptions) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(opts.ps_addr.clone())
        .with_context(|| format!("DRACO_PS_ADDR: {:?} is not a URL like http://host:port", opts.ps_addr))?
        .initial_stream_window_size(16 * 1024 * 1024)
        .initial_connection_window_size(32 * 1024 * 1024)
        .max_frame_size(draco_proto::MAX_FRAME)
        .connect_timeout(Duration::from_secs(5))
        // A PS that vanished without closing the connection (a dead node, a cut network) is
        // noticed by pings within ~40 s, and the worker reconnects instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if started.elapsed() < opts.connect_deadline => {
                tracing::debug!("PS not reachable yet ({e}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => bail!(
                "could not reach the parameter server at {} within {:?}: {e}",
                opts.ps_addr,
                opts.connect_deadline
            ),
        }
    }
}

/// Runs until the PS says the job is finished.
pub async fn run(opts: WorkerOptions) -> anyhow::Result<WorkerSummary> {
    opts.job.validate().context("invalid job")?;
    let rank = opts.rank;
    let job = opts.job.clone();
    let data =
        tokio::task::spawn_blocking(move || draco_model::load_dataset(&job.dataset, Split::Train, job.training.seed))
            .await??;
    let mut builder = MessageBuilder::new(&opts.job, rank, &data)?;
    let layout_digest = builder.computer().layout().digest();
    let param_count = builder.computer().num_params() as u64;
    let credentials = Credentials {
        rank: rank.to_string().parse().context("rank as metadata")?,
        bearer: format!("Bearer {}", opts.token).parse().context("DRACO_TOKEN must be printable ASCII")?,
    };
    let mut metadata = MetadataMap::new();
    credentials.add_to(&mut metadata);
    let metrics = Arc::new(WorkerMetrics::new());
    if let Some(addr) = opts.metrics_addr {
        let m = metrics.clone();
        let bound = draco_metrics::serve(addr, move || m.set.render()).await?;
        tracing::info!(rank, metrics = %format!("http://{bound}/metrics"), "serving metrics");
    }
    let phase = |name: &str, seconds: f64| metrics.phase_seconds.with_label_values(&[name]).observe(seconds);
    let mut summary = WorkerSummary::default();
    let data = Arc::new(data);
    'session: loop {
        // Gradients go out by draco_proto::push (no codec copies), everything else by the
        // generated client; both over the same connection.
        let mut channel = connect(&opts).await?;
        let mut client = ParameterServerClient::with_interceptor(channel.clone(), credentials.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let joined = match client.join(JoinRequest { layout_digest, param_count }).await {
            Ok(r) => r.into_inner(),
            Err(s) if is_transient(&s) => {
                summary.reconnects += 1;
                metrics.reconnects.inc();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'session;
            }
            Err(s) => bail!("the parameter server refused rank {rank}: {}", s.message()),
        };
        tracing::info!(rank, step = joined.step, incarnation = %joined.incarnation, "joined");
        let mut step = joined.step;
        loop {
            let fetch_started = Instant::now();
            let (param_step, params, finished) = match fetch(&mut client, step).await {
                Ok(v) => v,
                // This worker fell a step behind while fetching: fetch the newer parameters.
                Err(s) if s.message().starts_with(PARAMETERS_REPLACED) => continue,
                Err(s) if is_transient(&s) => {
                    summary.reconnects += 1;
                    metrics.reconnects.inc();
                    continue 'session;
                }
                Err(s) => bail!("fetching parameters for step {step}: {}", s.message()),
            };
            if finished {
                tracing::info!(rank, steps = summary.steps, "job finished");
                return Ok(summary);
            }
            anyhow::ensure!(
                params.len() as u64 == param_count,
                "the PS sent {} parameters, the model has {param_count}",
                params.len()
            );
            phase("fetch", fetch_started.elapsed().as_secs_f64());
            step = param_step;
            let build_started = Instant::now();
            let (message, returned) = {
                let data = data.clone();
                tokio::task::spawn_blocking(move || {
                    let m = builder.build(step, &params, &data);
                    (m, builder)
                })
                .await?
            };
            builder = returned;
            let build_seconds = build_started.elapsed().as_secs_f64();
            phase("compute", (build_seconds - message.encode_seconds).max(0.0));
            phase("encode", message.encode_seconds);
            let sent_bytes = message.values.len() as u64 * 4;
            let push = GradientPush {
                incarnation: &joined.incarnation,
                step,
                loss: message.loss,
                values: draco_proto::payload::into_le_bytes(message.values),
            };
            let send_started = Instant::now();
            let sent = draco_proto::push::push_gradient(&mut channel, &metadata, &push).await.map(|_| ());
            phase("send", send_started.elapsed().as_secs_f64());
            match sent {
                Ok(()) => {
                    summary.steps += 1;
                    summary.forged += u64::from(message.forged);
                    metrics.step.set(step as i64);
                    metrics.sent_messages.inc();
                    metrics.sent_bytes.inc_by(sent_bytes);
                    metrics.forged_messages.inc_by(u64::from(message.forged));
                    metrics.train_loss.set(f64::from(message.loss));
                }
                // Someone (our earlier attempt) already delivered, or the PS moved on.
                Err(s) if s.code() == Code::AlreadyExists || s.message().starts_with(refusal::STALE_STEP) => {}
                // Another process pushed as this rank (a replaced pod still running): give it
                // time to finish instead of cutting its push off again and again.
                Err(s) if s.message().starts_with(refusal::SUPERSEDED) => {
                    // Jittered by a per-process random number, so two such processes fall out of step.
                    let random = {
                        use std::hash::{BuildHasher, Hasher};
                        std::collections::hash_map::RandomState::new().build_hasher().finish()
                    };
                    let pause = Duration::from_millis(500 + random % 1500);
                    tracing::warn!(rank, step, "another push as rank {rank} replaced ours; retrying in {pause:?}");
                    summary.reconnects += 1;
                    metrics.reconnects.inc();
                    tokio::time::sleep(pause).await;
                    continue 'session;
                }
                Err(s) if s.message().starts_with(refusal::WRONG_INCARNATION) => {
                    tracing::warn!(rank, "the parameter server restarted: joining again");
                    summary.reconnects += 1;
                    metrics.reconnects.inc();
                    continue 'session;
                }
                Err(s) if is_transient(&s) => {
                    summary.reconnects += 1;
                    metrics.reconnects.inc();
                    continue 'session;
                }
                Err(s) => bail!("pushing step {step}: {}", s.message()),
            }
            step += 1;
        }
    }
}

/// Connection-level failures (PS restarting, network blip, a connection closed after missed
/// pings, which tonic reports as an HTTP/2 error): reconnect and rejoin.
fn is_transient(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted)
        || (s.code() == Code::Internal && s.message().starts_with("h2 protocol error"))
}

async fn fetch(client: &mut Client, step: u64) -> Result<(u64, Vec<f32>, bool), tonic::Status> {
    let mut stream = client.fetch_parameters(FetchRequest { step }).await?.into_inner();
    let mut params = Vec::new();
    let (mut at, mut finished) = (step, false);
    while let Some(chunk) = stream.message().await? {
        if chunk.offset != params.len() as u64 || chunk.data.len() % 4 != 0 || chunk.total > (1 << 34) {
            return Err(tonic::Status::data_loss("the PS sent parameter chunks out of order"));
        }
        if params.is_empty() {
            params.reserve(chunk.total as usize);
        }
        draco_proto::payload::extend_f32s(&mut params, &chunk.data);
        at = chunk.step;
        finished = chunk.finished;
    }
    Ok((at, params, finished))
}
