//! A real PS on a real loopback socket, attacked with malformed and dishonest requests from a
//! raw gRPC client. Every one must be refused with a clear status and a counted reason, and
//! the PS must keep serving honest workers afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use draco_core::job::JobConfig;
use draco_proto::v1::parameter_server_client::ParameterServerClient;
use draco_proto::v1::{FetchRequest, GradientChunk, JoinRequest};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

fn job() -> JobConfig {
    let yaml = "
apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: hostile}
spec:
  workers: 3
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  stragglerTimeoutSeconds: 60
  model: {architecture: mlp, hidden: [8]}
  dataset: {format: synthetic}
  training: {steps: 8, batchSize: 30, seed: 1, optimizer: {type: sgd, learningRate: 0.1}}
";
    draco_api::DracoJob::from_yaml(yaml).unwrap().job_config()
}

fn request<T>(msg: T, rank: &str, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(draco_proto::RANK_HEADER, rank.parse().unwrap());
    r.metadata_mut().insert(draco_proto::AUTH_HEADER, format!("Bearer {token}").parse().unwrap());
    r
}

fn chunk(incarnation: &str, step: u64, offset: u64, total: u64, values: &[f32]) -> GradientChunk {
    let data = draco_proto::payload::f32s_to_bytes(values);
    GradientChunk { incarnation: incarnation.into(), step, offset, total, data, loss: 0.5 }
}

async fn push(
    client: &mut ParameterServerClient<Channel>,
    rank: &str,
    token: &str,
    chunks: Vec<GradientChunk>,
) -> Result<(), tonic::Status> {
    client.push_gradient(request(tokio_stream::iter(chunks), rank, token)).await.map(|_| ())
}

async fn metrics(http: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn counted(metrics: &str, reason: &str) -> f64 {
    let key = format!("draco_rejected_messages_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A PS for `job()` with tokens aaaa, bbbb, cccc, and a client that joined as rank 0.
struct Started {
    ps: draco_ps::LoopbackPs,
    grpc: SocketAddr,
    http: SocketAddr,
    client: ParameterServerClient<Channel>,
    /// The PS's incarnation and the message length, as the join told them.
    inc: String,
    n: u64,
}

async fn start() -> Started {
    let tokens: Vec<String> = vec!["aaaa".into(), "bbbb".into(), "cccc".into()];
    let ps = draco_ps::LoopbackPs::start(job(), tokens).unwrap();
    let (grpc, http) = (ps.grpc, ps.http);
    let mut client = loop {
        match ParameterServerClient::connect(format!("http://{grpc}")).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let probe =
        draco_model::initial_parameters(&draco_model::Architecture::Mlp { hidden: vec![8] }, [1, 28, 28], 10, 1).1;
    let join = JoinRequest { layout_digest: probe.digest(), param_count: probe.len() as u64 };
    let joined = client.join(request(join, "0", "aaaa")).await.unwrap().into_inner();
    Started { ps, grpc, http, client, inc: joined.incarnation, n: joined.message_len }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_counted_while_the_ps_keeps_serving() {
    let Started { ps, grpc, http, mut client, inc, n } = start().await;
    let good: Vec<f32> = vec![0.25; n as usize];

    let expect = |r: Result<(), tonic::Status>, code: Code, text: &str| {
        let s = r.expect_err("must be refused");
        assert_eq!(s.code(), code, "{s:?}");
        assert!(s.message().contains(text), "message {:?} should mention {text:?}", s.message());
    };
    // Bad token, token of another rank, unknown and malformed ranks.
    expect(
        push(&mut client, "0", "bbbb", vec![chunk(&inc, 0, 0, n, &good)]).await,
        Code::Unauthenticated,
        "not rank 0's",
    );
    expect(push(&mut client, "0", "nope", vec![chunk(&inc, 0, 0, n, &good)]).await, Code::Unauthenticated, "token");
    expect(
        push(&mut client, "7", "aaaa", vec![chunk(&inc, 0, 0, n, &good)]).await,
        Code::PermissionDenied,
        "rank 7 is not in",
    );
    expect(push(&mut client, "-1", "aaaa", vec![]).await, Code::PermissionDenied, "must be a rank");
    let before = counted(&metrics(http).await, "unauthenticated");
    let fetch = client.fetch_parameters(request(FetchRequest { step: 0 }, "1", "aaaa")).await.map(|_| ());
    expect(fetch, Code::Unauthenticated, "token");
    // Refused once, from the headers, before the request is decoded.
    assert_eq!(counted(&metrics(http).await, "unauthenticated"), before + 1.0);
    // A model that does not match.
    let wrong = client.join(request(JoinRequest { layout_digest: 1, param_count: 5 }, "1", "bbbb")).await.map(|_| ());
    expect(wrong, Code::FailedPrecondition, "this job's has");
    // Wrong incarnation, stale and future steps.
    expect(
        push(&mut client, "0", "aaaa", vec![chunk("old", 0, 0, n, &good)]).await,
        Code::FailedPrecondition,
        "join again",
    );
    expect(
        push(&mut client, "0", "aaaa", vec![chunk(&inc, 3, 0, n, &good)]).await,
        Code::OutOfRange,
        "pushed step 3, the PS is gathering step 0",
    );
    // Declared sizes: too large (refused before allocating), too small.
    expect(
        push(&mut client, "0", "aaaa", vec![chunk(&inc, 0, 0, u64::MAX, &good[..4])]).await,
        Code::InvalidArgument,
        &format!("expected {n}"),
    );
    expect(
        push(&mut client, "0", "aaaa", vec![chunk(&inc, 0, 0, n - 1, &good[..4])]).await,
        Code::InvalidArgument,
        "declared",
    );
    // Chunks that overlap, leave a gap, overflow, or end early; an empty stream.
    let half = (n / 2) as usize;
    let overlap = vec![chunk(&inc, 0, 0, n, &good[..half]), chunk(&inc, 0, 1, n, &good[1..])];
    expect(push(&mut client, "0", "aaaa", overlap).await, Code::InvalidArgument, "overlap or gap");
    let gap = vec![chunk(&inc, 0, 0, n, &good[..half]), chunk(&inc, 0, half as u64 + 1, n, &good[half + 1..])];
    expect(push(&mut client, "0", "aaaa", gap).await, Code::InvalidArgument, "overlap or gap");
    let overflow = vec![chunk(&inc, 0, 0, n, &good), chunk(&inc, 0, n, n, &good[..1])];
    expect(push(&mut client, "0", "aaaa", overflow).await, Code::InvalidArgument, "does not fit");
    expect(
        push(&mut client, "0", "aaaa", vec![chunk(&inc, 0, 0, n, &good[..half])]).await,
        Code::InvalidArgument,
        "sent",
    );
    expect(push(&mut client, "0", "aaaa", vec![]).await, Code::InvalidArgument, "no chunk");
    let switching = vec![chunk(&inc, 0, 0, n, &good[..half]), chunk(&inc, 1, half as u64, n, &good[half..])];
    expect(push(&mut client, "0", "aaaa", switching).await, Code::InvalidArgument, "changed step");

    // Still serving: an honest push is accepted, a second one is a duplicate.
    push(&mut client, "0", "aaaa", vec![chunk(&inc, 0, 0, n, &good)]).await.expect("honest push accepted");
    expect(
        push(&mut client, "0", "aaaa", vec![chunk(&inc, 0, 0, n, &good)]).await,
        Code::AlreadyExists,
        "already contributed",
    );
    // A second identical vector is s + 1 = 2 votes: step 0 is decided without waiting for
    // rank 2, and the PS moves to step 1.
    push(&mut client, "1", "bbbb", vec![chunk(&inc, 0, 0, n, &good)]).await.unwrap();
    let mut fetched =
        client.fetch_parameters(request(FetchRequest { step: 1 }, "2", "cccc")).await.unwrap().into_inner();
    let first = fetched.message().await.unwrap().unwrap();
    assert_eq!(first.step, 1);
    // Rank 2's late, different step-0 vector is still judged: it is named a suspect.
    let lie: Vec<f32> = vec![-9.0; n as usize];
    push(&mut client, "2", "cccc", vec![chunk(&inc, 0, 0, n, &lie)]).await.expect("late vector judged");
    expect(
        push(&mut client, "1", "bbbb", vec![chunk(&inc, 0, 0, n, &good)]).await,
        Code::AlreadyExists,
        "already contributed",
    );
    // Once LATE_ROUNDS more steps are decided, step 0 is stale.
    for step in 1..=draco_ps::LATE_ROUNDS as u64 {
        push(&mut client, "0", "aaaa", vec![chunk(&inc, step, 0, n, &good)]).await.unwrap();
        push(&mut client, "1", "bbbb", vec![chunk(&inc, step, 0, n, &good)]).await.unwrap();
        let mut f =
            client.fetch_parameters(request(FetchRequest { step: step + 1 }, "0", "aaaa")).await.unwrap().into_inner();
        assert_eq!(f.message().await.unwrap().unwrap().step, step + 1);
    }
    expect(
        push(&mut client, "2", "cccc", vec![chunk(&inc, 0, 0, n, &good)]).await,
        Code::FailedPrecondition,
        "stale_step",
    );

    // Framing no gRPC library would send, straight onto the wire: refused, counted, still serving.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    let header = request((), "0", "aaaa").metadata().clone();
    let framed = |flag: u8, declared: u32, body: &[u8]| {
        let mut wire = vec![flag];
        wire.extend_from_slice(&declared.to_be_bytes());
        wire.extend_from_slice(body);
        vec![bytes::Bytes::from(wire)]
    };
    let whole = chunk(&inc, 5, 0, n, &good).encode_to_vec();
    for (frames, why) in [
        (framed(1, whole.len() as u32, &whole), "compressed messages (flag 1)"),
        (framed(0, u32::MAX, &whole[..16]), "4294967295 bytes is over the 4194304-byte limit"),
        (framed(0, whole.len() as u32, &whole[..whole.len() - 5]), "ended inside a message"),
        (framed(0, 3, &[0xff, 0xff, 0xff]), "does not decode"),
    ] {
        let refused = draco_proto::push::push_frames(&mut channel.clone(), &header, frames).await.map(|_| ());
        expect(refused, Code::InvalidArgument, why);
    }
    push(&mut client, "0", "aaaa", vec![chunk(&inc, 5, 0, n, &good)]).await.expect("still serving");

    let text = metrics(http).await;
    for (reason, at_least) in [
        ("unauthenticated", 3.0),
        ("unknown_rank", 2.0),
        ("layout_mismatch", 1.0),
        ("wrong_incarnation", 1.0),
        ("future_step", 1.0),
        ("wrong_length", 3.0),
        ("bad_chunk", 8.0),
        ("empty_stream", 1.0),
        ("duplicate", 2.0),
        ("stale_step", 1.0),
    ] {
        assert!(counted(&text, reason) >= at_least, "reason {reason}: {}", counted(&text, reason));
    }
    assert!(text.contains(&format!("draco_steps_total {}", draco_ps::LATE_ROUNDS + 1)), "steps decoded");
    assert!(text.contains("draco_suspects_total{reason=\"outvoted_in_group\",worker=\"2\"} 1"), "late liar named");
    ps.stop().await;
}

/// The value of an unlabelled metric.
fn value(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map_or(f64::NAN, |v| v.trim().parse().unwrap())
}

/// Polls `/metrics` until `metric` reads `want` (a PS-side event the test cannot await).
async fn until_metric(http: SocketAddr, metric: impl Fn(&str) -> f64, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = metric(&metrics(http).await);
        if got == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "metric stayed at {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A liar holding many half-sent pushes open would pin one message buffer each; instead a
/// rank has at most two pushes in flight: one that has not passed its first chunk's checks
/// (a newer push replaces it) and one that has (only a newer push that passed them too
/// replaces it, as an honest retry after a broken connection does, so a stale or empty push
/// cannot cut a valid one off). Other ranks are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranks_newer_push_replaces_its_stalled_one() {
    let Started { ps, http, client, inc, n, .. } = start().await;
    let good: Vec<f32> = vec![0.25; n as usize];
    // Half a message (or nothing at all), then silence: the stream stays open while its
    // sender is kept.
    let stalled = |rank: &'static str, token: &'static str, half: bool| {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        if half {
            tx.unbounded_send(chunk(&inc, 0, 0, n, &good[..n as usize / 2])).unwrap();
        }
        let mut client = client.clone();
        let call = tokio::spawn(async move { client.push_gradient(request(rx, rank, token)).await.map(|_| ()) });
        (tx, call)
    };
    let in_flight = |m: &str| value(m, "draco_pushes_in_flight");
    let superseded = |m: &str| counted(m, "superseded");

    let (_rank1_sender, rank1_call) = stalled("1", "bbbb", true);
    until_metric(http, in_flight, 1.0).await;
    // Pushes that never send a chunk: each newer one replaces the one before.
    let mut held = Vec::new();
    for replaced in 0..3 {
        held.push(stalled("0", "aaaa", false));
        until_metric(http, superseded, f64::from(replaced)).await;
        until_metric(http, in_flight, 2.0).await;
    }
    // A half-sent push replaces the last of them and passes its checks.
    held.push(stalled("0", "aaaa", true));
    until_metric(http, superseded, 3.0).await;
    until_metric(http, in_flight, 2.0).await;
    // Pushes that fail their checks leave it alone.
    let future = push(&mut client.clone(), "0", "aaaa", vec![chunk(&inc, 5, 0, n, &good)]).await;
    assert_eq!(future.expect_err("a future step").code(), Code::OutOfRange);
    let empty = push(&mut client.clone(), "0", "aaaa", vec![]).await;
    assert_eq!(empty.expect_err("no chunk").code(), Code::InvalidArgument);
    let text = metrics(http).await;
    assert_eq!((superseded(&text), in_flight(&text)), (3.0, 2.0), "a refused push replaced a valid one");
    // A newer half-sent push replaces it, and a whole push replaces that one.
    held.push(stalled("0", "aaaa", true));
    until_metric(http, superseded, 4.0).await;
    push(&mut client.clone(), "0", "aaaa", vec![chunk(&inc, 0, 0, n, &good)]).await.expect("rank 0's whole push");
    for (_sender, call) in held {
        let refused = call.await.unwrap().expect_err("a replaced push is refused");
        assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
        assert!(refused.message().contains("a newer push from the same rank replaced this one"), "{refused:?}");
    }
    until_metric(http, superseded, 5.0).await;
    // Rank 1's stalled push was never touched by rank 0's; its own retry replaces it.
    until_metric(http, in_flight, 1.0).await;
    push(&mut client.clone(), "1", "bbbb", vec![chunk(&inc, 0, 0, n, &good)]).await.expect("rank 1's retry");
    assert_eq!(rank1_call.await.unwrap().expect_err("replaced by the retry").code(), Code::Aborted);
    push(&mut client.clone(), "2", "cccc", vec![chunk(&inc, 0, 0, n, &good)]).await.expect("rank 2");
    until_metric(http, in_flight, 0.0).await;
    until_metric(http, |m| value(m, "draco_steps_total"), 1.0).await;
    assert_eq!(superseded(&metrics(http).await), 6.0);
    ps.stop().await;
}
