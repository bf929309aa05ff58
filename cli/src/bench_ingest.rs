//! `draco bench ingest`: how fast coded gradients stream into a real PS over gRPC on loopback,
//! as a ratio to raw TCP moving the same bytes in the same run, and where the time of one
//! training step goes (compute, encode, transfer, decode, update) at two model sizes.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use draco_core::cyclic::CyclicCode;
use draco_core::decoder::StepDecoder;
use draco_core::job::{DatasetFormat, DatasetSpec, JobConfig};
use draco_core::optimizer::Optimizer;
use draco_model::{Architecture, Dataset, GradientComputer};
use draco_proto::push::GradientPush;
use draco_proto::v1::parameter_server_client::ParameterServerClient;
use draco_proto::v1::{FetchRequest, JoinRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Steps pushed through the PS per model size, and rounds of each TCP baseline: the
    /// fastest of each is reported (the same count for both, so neither gets more tries).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    steps: u64,
    /// Workers pushing concurrently (each holds a d ~ 5M message in flight: 19 MB).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=32))]
    workers: usize,
    /// Model sizes to measure (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "800,100k,5M")]
    sizes: Vec<ModelSize>,
}

/// MLP 784-h-10 models: d ~ 800 (805: what one push costs regardless of size), d ~ 100k
/// (101,770) and d ~ 5M (4,770,010) parameters.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum ModelSize {
    #[value(name = "800")]
    Tiny,
    #[value(name = "100k")]
    Small,
    #[value(name = "5M")]
    Large,
}

impl ModelSize {
    fn hidden(self) -> usize {
        match self {
            ModelSize::Tiny => 1,
            ModelSize::Small => 128,
            ModelSize::Large => 6000,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ModelSize::Tiny => "d ~ 800",
            ModelSize::Small => "d ~ 100k",
            ModelSize::Large => "d ~ 5M",
        }
    }
}

/// Untimed steps first: a PS reuses the message buffers of rounds that left the late-judging
/// window, so only from then on does a step look like the rest of a job.
const WARM_UP_STEPS: u64 = draco_ps::LATE_ROUNDS as u64 + 1;

pub fn run(args: &IngestArgs) -> anyhow::Result<()> {
    // Senders and receivers run on separate runtimes, as workers and the PS run in separate
    // processes: on one runtime they would share its two worker threads (and task queues).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let receiving = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("draco bench ingest: {} workers push concurrently, best of {} steps", args.workers, args.steps);
    println!(
        "{:<10} {:>11} {:>8} {:>9} {:>6} {:>9} {:>6} | {:>10} {:>9} {:>10} {:>9} {:>9}",
        "model",
        "params",
        "PS GB/s",
        "TCP GB/s",
        "ratio",
        "sink GB/s",
        "ratio",
        "compute ms",
        "encode ms",
        "transfer ms",
        "decode ms",
        "update ms"
    );
    for size in [ModelSize::Tiny, ModelSize::Small, ModelSize::Large].into_iter().filter(|s| args.sizes.contains(s)) {
        let (hidden, label) = (size.hidden(), size.label());
        let job = job(args.workers, hidden, WARM_UP_STEPS + args.steps);
        let (params, _) =
            draco_model::initial_parameters(&Architecture::Mlp { hidden: vec![hidden] }, [1, 28, 28], 10, 1);
        let d = params.len();
        let (ps_seconds, bytes) = runtime.block_on(through_ps(&job, args.steps, receiving.handle()))?;
        let sink_seconds =
            runtime.block_on(raw_tcp(bytes, args.workers, args.steps, Receiver::Discard, receiving.handle()))?;
        let tcp_seconds =
            runtime.block_on(raw_tcp(bytes, args.workers, args.steps, Receiver::Keep, receiving.handle()))?;
        let split = step_split(&job, &params)?;
        let gbps = |seconds: f64| bytes as f64 / seconds / 1e9;
        println!(
            "{:<10} {:>11} {:>8.2} {:>9.2} {:>6.2} {:>9.2} {:>6.2} | {:>10.1} {:>9.1} {:>10.1} {:>9.1} {:>9.1}",
            label,
            d,
            gbps(ps_seconds),
            gbps(tcp_seconds),
            tcp_seconds / ps_seconds,
            gbps(sink_seconds),
            sink_seconds / ps_seconds,
            split[0] * 1e3,
            split[1] * 1e3,
            ps_seconds * 1e3,
            split[2] * 1e3,
            split[3] * 1e3
        );
    }
    println!(
        "ratio = PS gRPC ingest throughput / raw TCP throughput of the same bytes, received into a whole-message \
         buffer as the PS must (TCP) or read and dropped (sink), both over connections opened beforehand; higher is \
         better. At d ~ 800 the bytes are negligible: the row shows the fixed cost of one step's pushes."
    );
    Ok(())
}

fn job(workers: usize, hidden: usize, steps: u64) -> JobConfig {
    let yaml = format!(
        "apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {{name: bench}}
spec:
  workers: {workers}
  redundancy: 1
  code: none
  aggregator: mean
  model: {{architecture: mlp, hidden: [{hidden}]}}
  dataset: {{format: synthetic}}
  training: {{steps: {}, batchSize: 60, seed: 1, optimizer: {{type: sgd, learningRate: 0.01}}}}
",
        steps + 1
    );
    draco_api::DracoJob::from_yaml(&yaml).expect("bench job").job_config()
}

fn request<T>(msg: T, rank: usize, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(draco_proto::RANK_HEADER, rank.to_string().parse().expect("ascii"));
    r.metadata_mut().insert(draco_proto::AUTH_HEADER, format!("Bearer {token}").parse().expect("ascii"));
    r
}

/// Pushes `steps` steps (after the warm-up) from every worker concurrently through a real PS;
/// returns the fastest step's wall time (all pushes of that step) and the bytes one step moves.
async fn through_ps(job: &JobConfig, steps: u64, receiving: &tokio::runtime::Handle) -> anyhow::Result<(f64, usize)> {
    let tokens: Vec<String> = (0..job.scheme.workers).map(|i| format!("bench-token-{i}")).collect();
    let ps = {
        let _on = receiving.enter();
        draco_ps::LoopbackPs::start(job.clone(), tokens.clone())?
    };
    let grpc = ps.grpc;
    let connect = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
                .initial_stream_window_size(16 * 1024 * 1024)
                .initial_connection_window_size(32 * 1024 * 1024)
                .max_frame_size(draco_proto::MAX_FRAME);
            match endpoint.connect().await {
                Ok(channel) => return anyhow::Ok(channel),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let mut channels = Vec::new();
    for _ in 0..job.scheme.workers {
        channels.push(connect().await?);
    }
    let mut control = ParameterServerClient::new(channels[0].clone()).max_decoding_message_size(8 << 20);
    let layout = draco_model::initial_parameters(&draco_model::architecture(&job.model), [1, 28, 28], 10, 1).1;
    let joined = control
        .join(request(JoinRequest { layout_digest: layout.digest(), param_count: layout.len() as u64 }, 0, &tokens[0]))
        .await?
        .into_inner();
    let n = joined.message_len as usize;
    // Converted once, outside the timing, as a worker's encode step would have.
    let payload = draco_proto::payload::into_le_bytes(vec![0.001f32; n]);
    let mut best = f64::INFINITY;
    for step in 0..WARM_UP_STEPS + steps {
        let started = Instant::now();
        let mut pushes = Vec::new();
        // Pushed exactly as a worker pushes (draco_proto::push), one connection per worker.
        for (rank, channel) in channels.iter().enumerate() {
            let mut channel = channel.clone();
            let metadata = request((), rank, &tokens[rank]).metadata().clone();
            let (incarnation, values) = (joined.incarnation.clone(), payload.clone());
            pushes.push(tokio::spawn(async move {
                let push = GradientPush { incarnation: &incarnation, step, loss: 0.0, values };
                draco_proto::push::push_gradient(&mut channel, &metadata, &push).await
            }));
        }
        for p in pushes {
            p.await?.context("push")?;
        }
        if step >= WARM_UP_STEPS {
            best = best.min(started.elapsed().as_secs_f64());
        }
        // Wait for the PS to finish the step before timing the next one.
        let mut next =
            control.fetch_parameters(request(FetchRequest { step: step + 1 }, 0, &tokens[0])).await?.into_inner();
        while next.message().await?.is_some() {}
    }
    ps.stop().await;
    Ok((best, n * 4 * job.scheme.workers))
}

/// What the raw-TCP baseline's receiver does with the bytes.
#[derive(Clone, Copy, PartialEq)]
enum Receiver {
    /// Reads into one reused 1 MiB buffer and drops it: the bytes never land anywhere.
    Discard,
    /// Reads each worker's bytes into a buffer of the whole message, as any gradient receiver
    /// (the PS included) must hold it; the buffer is reused from round to round, as the PS
    /// reuses its own, so neither pays for fresh pages.
    Keep,
}

/// The same bytes over plain TCP on loopback: one connection per worker, opened before the
/// timing as the PS's are; each round every worker sends its bytes and waits for a one-byte
/// acknowledgement. Fastest of `rounds`, after one untimed round.
async fn raw_tcp(
    bytes: usize,
    workers: usize,
    rounds: u64,
    receiver: Receiver,
    receiving: &tokio::runtime::Handle,
) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let per_worker = bytes / workers;
    let receivers = receiving.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a listener on this runtime");
        loop {
            let Ok((socket, _)) = listener.accept().await else { break };
            tokio::spawn(receive_rounds(socket, per_worker, receiver));
        }
    });
    let mut connections = Vec::new();
    for _ in 0..workers {
        let socket = tokio::net::TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        connections.push(socket);
    }
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    let mut best = f64::INFINITY;
    for round in 0..=rounds {
        let started = Instant::now();
        let mut senders = Vec::new();
        for mut socket in connections.drain(..) {
            let chunk = chunk.clone();
            senders.push(tokio::spawn(async move {
                let mut left = per_worker;
                while left > 0 {
                    let n = left.min(chunk.len());
                    socket.write_all(&chunk[..n]).await?;
                    left -= n;
                }
                let mut ack = [0u8; 1];
                socket.read_exact(&mut ack).await?;
                anyhow::Ok(socket)
            }));
        }
        for s in senders {
            connections.push(s.await??);
        }
        if round > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
    }
    receivers.abort();
    Ok(best)
}

/// One baseline connection's receiving side: `per_worker` bytes per round, then an ack.
async fn receive_rounds(mut socket: tokio::net::TcpStream, per_worker: usize, receiver: Receiver) {
    let _ = socket.set_nodelay(true);
    let mut buffer = vec![0u8; if receiver == Receiver::Keep { per_worker } else { 1 << 20 }];
    loop {
        let mut received = 0;
        while received < per_worker {
            let room = match receiver {
                Receiver::Keep => &mut buffer[received..],
                Receiver::Discard => &mut buffer[..(per_worker - received).min(1 << 20)],
            };
            match socket.read(room).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
        std::hint::black_box(&buffer);
        if socket.write_all(b"k").await.is_err() {
            return;
        }
    }
}

/// Seconds of [compute, encode, decode, update] for one step of a 6-worker cyclic job with
/// r = 3 at this model size (compute = one worker's r partition gradients).
fn step_split(job: &JobConfig, params: &[f32]) -> anyhow::Result<[f64; 4]> {
    let d = params.len();
    let data: Dataset = draco_model::load_dataset(
        &DatasetSpec { format: DatasetFormat::Synthetic, path: String::new() },
        draco_model::Split::Train,
        1,
    )?;
    let mut computer = GradientComputer::new(&draco_model::architecture(&job.model), data.shape, data.classes);
    let (p, r, batch) = (6, 3, 240);
    let t = Instant::now();
    let grads: Vec<Vec<f32>> = (0..r)
        .map(|i| computer.gradient(params, &data, &((i * 40)..(i * 40 + 40)).collect::<Vec<_>>(), batch, false).0)
        .collect();
    let compute = t.elapsed().as_secs_f64();
    let code = CyclicCode::new(p, r);
    let t = Instant::now();
    let held: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let message = code.encode::<f32>(0, &held);
    let encode = t.elapsed().as_secs_f64();
    // All workers' messages, consistent: partition i's gradient is grads[i % r].
    drop(message);
    let messages: Vec<Vec<f32>> = (0..p)
        .map(|j| {
            let held: Vec<&[f32]> = (0..r).map(|k| grads[(j + k) % p % r].as_slice()).collect();
            code.encode::<f32>(j, &held)
        })
        .collect();
    let scheme = draco_core::scheme::Scheme::new(draco_core::scheme::CodeKind::Cyclic, p, r, 1);
    let decoder = StepDecoder::new(&scheme, None, d)?;
    let slots: Vec<Option<&[f32]>> = messages.iter().map(|m| Some(m.as_slice())).collect();
    let decode = crate::bench::time_best(3, || {
        std::hint::black_box(decoder.decode(&slots));
    })
    .as_secs_f64();
    let mut optimizer = Optimizer::new(&job.training.optimizer, d);
    let mut p2 = params.to_vec();
    let update = crate::bench::time_best(3, || optimizer.apply(&mut p2, &grads[0])).as_secs_f64();
    Ok([compute, encode, decode, update])
}
