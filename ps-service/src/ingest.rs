//! The gRPC service: authenticates every call (rank + per-rank token, constant-time compare),
//! serves parameters in chunks, and accepts at most one coded gradient per (incarnation, rank,
//! step), checking sizes and chunk offsets before allocating. Every rejection is a clear
//! status naming expected vs received, and a counted reason; the server keeps serving.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use draco_proto::push::{ChunkReader, PUSH_GRADIENT_PATH, ReadError};
use draco_proto::v1::parameter_server_server::{ParameterServer, ParameterServerServer};
use draco_proto::v1::{FetchRequest, GradientChunk, JoinReply, JoinRequest, ParameterChunk, PushReply};
use draco_proto::{AUTH_HEADER, CHUNK_VALUES, PARAMETERS_REPLACED, RANK_HEADER, refusal};
use futures::{Stream, StreamExt};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;

/// Why a request was refused: the `reason` label of `draco_rejected_messages_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Unauthenticated,
    UnknownRank,
    LayoutMismatch,
    WrongIncarnation,
    StaleStep,
    FutureStep,
    Duplicate,
    WrongLength,
    BadChunk,
    EmptyStream,
    Superseded,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::Unauthenticated,
        Rejection::UnknownRank,
        Rejection::LayoutMismatch,
        Rejection::WrongIncarnation,
        Rejection::StaleStep,
        Rejection::FutureStep,
        Rejection::Duplicate,
        Rejection::WrongLength,
        Rejection::BadChunk,
        Rejection::EmptyStream,
        Rejection::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::UnknownRank => "unknown_rank",
            Rejection::LayoutMismatch => "layout_mismatch",
            Rejection::WrongIncarnation => refusal::WRONG_INCARNATION,
            Rejection::StaleStep => refusal::STALE_STEP,
            Rejection::FutureStep => "future_step",
            Rejection::Duplicate => "duplicate",
            Rejection::WrongLength => "wrong_length",
            Rejection::BadChunk => "bad_chunk",
            Rejection::EmptyStream => "empty_stream",
            Rejection::Superseded => refusal::SUPERSEDED,
        }
    }

    fn code(self) -> tonic::Code {
        match self {
            Rejection::Unauthenticated => tonic::Code::Unauthenticated,
            Rejection::UnknownRank => tonic::Code::PermissionDenied,
            Rejection::WrongIncarnation | Rejection::StaleStep | Rejection::LayoutMismatch => {
                tonic::Code::FailedPrecondition
            }
            Rejection::FutureStep => tonic::Code::OutOfRange,
            Rejection::Duplicate => tonic::Code::AlreadyExists,
            Rejection::WrongLength | Rejection::BadChunk | Rejection::EmptyStream => tonic::Code::InvalidArgument,
            // What a retry does to its own earlier attempt: the sender may try again.
            Rejection::Superseded => tonic::Code::Aborted,
        }
    }
}

pub struct Service {
    pub shared: Arc<Shared>,
}

impl Service {
    fn reject(&self, why: Rejection, message: String) -> Status {
        self.shared.metrics.rejected.with_label_values(&[why.as_str()]).inc();
        tracing::debug!(reason = why.as_str(), "{message}");
        Status::new(why.code(), format!("{}: {message}", why.as_str()))
    }

    /// The caller's rank, if its token matches that rank's.
    fn authenticate(&self, meta: &MetadataMap) -> Result<usize, Status> {
        let rank_text = meta.get(RANK_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let workers = self.shared.tokens.len();
        let rank: usize = rank_text.parse().map_err(|_| {
            self.reject(
                Rejection::UnknownRank,
                format!("metadata {RANK_HEADER} must be a rank 0..{}, got {rank_text:?}", workers - 1),
            )
        })?;
        if rank >= workers {
            return Err(
                self.reject(Rejection::UnknownRank, format!("rank {rank} is not in this job's 0..{}", workers - 1))
            );
        }
        let presented =
            meta.get(AUTH_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), self.shared.tokens[rank].as_bytes()) {
            return Err(self.reject(Rejection::Unauthenticated, format!("the token presented is not rank {rank}'s")));
        }
        Ok(rank)
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ParameterChunk, Status>> + Send>>;

/// The chunks of one published parameter vector, each made when the client is ready for it:
/// slices of one shared byte view, so fetches hold no copies (tonic's encoder copies a chunk
/// as it sends it). The stream holds the vector only weakly: a fetch whose reader stalls does
/// not keep an old step's parameters alive once the PS has published newer ones; it ends with
/// Aborted instead, and the worker fetches again.
fn parameter_chunks(
    params: std::sync::Weak<Vec<f32>>,
    step: u64,
    finished: bool,
    len: usize,
) -> impl Stream<Item = Result<ParameterChunk, Status>> + Send {
    // An empty vector still sends one chunk: it carries the step and the finished flag.
    let offsets: Vec<usize> = if len == 0 { vec![0] } else { (0..len).step_by(CHUNK_VALUES).collect() };
    futures::stream::iter(offsets).map(move |offset| {
        let params = params.upgrade().ok_or_else(|| {
            Status::aborted(format!(
                "{PARAMETERS_REPLACED}: the parameters of step {step} were replaced by newer ones before this \
                 fetch read them: fetch again"
            ))
        })?;
        let end = (offset + CHUNK_VALUES).min(len);
        Ok(ParameterChunk {
            step,
            offset: offset as u64,
            total: len as u64,
            data: draco_proto::payload::shared_le_bytes(params).slice(offset * 4..end * 4),
            finished,
        })
    })
}

#[tonic::async_trait]
impl ParameterServer for Service {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let rank = self.authenticate(request.metadata())?;
        let req = request.into_inner();
        let s = &self.shared;
        if req.layout_digest != s.layout_digest || req.param_count != s.param_count as u64 {
            return Err(self.reject(
                Rejection::LayoutMismatch,
                format!(
                    "rank {rank} built a model with {} parameters (layout {:#x}); this job's has {} (layout {:#x})",
                    req.param_count, req.layout_digest, s.param_count, s.layout_digest
                ),
            ));
        }
        let published = s.published.borrow().clone();
        tracing::info!(rank, step = published.step, "worker joined");
        Ok(Response::new(JoinReply {
            incarnation: s.incarnation.clone(),
            step: published.step,
            world_size: s.tokens.len() as u32,
            param_count: s.param_count as u64,
            message_len: s.message_len as u64,
            finished: published.finished,
        }))
    }

    type FetchParametersStream = ChunkStream;

    async fn fetch_parameters(&self, request: Request<FetchRequest>) -> Result<Response<ChunkStream>, Status> {
        self.authenticate(request.metadata())?;
        let wanted = request.into_inner().step;
        let mut rx = self.shared.published.subscribe();
        // Long-poll: wait while the PS is still on an earlier step.
        let published = loop {
            let current = rx.borrow_and_update().clone();
            if current.step >= wanted || current.finished {
                break current;
            }
            if rx.changed().await.is_err() {
                return Err(Status::unavailable("the parameter server is shutting down"));
            }
        };
        let chunks = parameter_chunks(
            Arc::downgrade(&published.params),
            published.step,
            published.finished,
            published.params.len(),
        );
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn push_gradient(&self, request: Request<Streaming<GradientChunk>>) -> Result<Response<PushReply>, Status> {
        let rank = self.authenticate(request.metadata())?;
        self.receive(rank, request.into_inner()).await.map(Response::new)
    }
}

impl Service {
    /// One coded gradient from `rank`, chunk by chunk: every check happens before the buffer
    /// is allocated or a chunk is copied into it.
    async fn receive(
        &self,
        rank: usize,
        mut stream: impl Stream<Item = Result<GradientChunk, Status>> + Unpin,
    ) -> Result<PushReply, Status> {
        let s = &self.shared;
        // At most two pushes per rank at a time, from their first byte, so a liar opening many
        // slow pushes cannot pin the PS's memory with half-received messages and buffers: one
        // before its first chunk's checks (a newer push ends it) and one past them (a newer
        // push past its checks ends it: an honest retry after a broken connection replaces
        // its dead attempt, but a stale or malformed push cannot cut a valid one off).
        let mut claim = PushClaim::new(s, rank);
        let first = match self.next_chunk(rank, &mut stream, &mut claim).await? {
            Some(chunk) => chunk,
            None => {
                return Err(
                    self.reject(Rejection::EmptyStream, format!("rank {rank} sent a gradient stream with no chunk"))
                );
            }
        };
        if first.incarnation != s.incarnation {
            return Err(self.reject(
                Rejection::WrongIncarnation,
                format!(
                    "rank {rank} pushed for incarnation {:?}, the PS is {:?}: join again",
                    first.incarnation, s.incarnation
                ),
            ));
        }
        let step = first.step;
        self.check_step(rank, step)?;
        if first.total != s.message_len as u64 {
            return Err(self.reject(
                Rejection::WrongLength,
                format!("rank {rank} declared {} values for step {step}, expected {}", first.total, s.message_len),
            ));
        }
        claim.checked();
        // Sizes checked: now a buffer may be taken. Its old contents are all overwritten below
        // before it is stored (anything short of the full length is refused).
        let mut message = s.message_buffer();
        let mut filled = 0;
        let mut loss = first.loss;
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            if chunk.step != step || chunk.total != s.message_len as u64 || chunk.incarnation != s.incarnation {
                return Err(self.reject(
                    Rejection::BadChunk,
                    format!("rank {rank}: a chunk changed step, total or incarnation mid-stream"),
                ));
            }
            if chunk.offset != filled as u64 {
                return Err(self.reject(
                    Rejection::BadChunk,
                    format!(
                        "rank {rank}: chunk at offset {} but {filled} values received so far (overlap or gap)",
                        chunk.offset
                    ),
                ));
            }
            if chunk.data.len() % 4 != 0 || filled + chunk.data.len() / 4 > s.message_len {
                return Err(self.reject(
                    Rejection::BadChunk,
                    format!(
                        "rank {rank}: chunk of {} bytes at offset {} does not fit the {}-value message",
                        chunk.data.len(),
                        chunk.offset,
                        s.message_len
                    ),
                ));
            }
            let values = chunk.data.len() / 4;
            draco_proto::payload::copy_f32s(&mut message.values_mut()[filled..filled + values], &chunk.data);
            filled += values;
            if chunk.loss != 0.0 {
                loss = chunk.loss;
            }
            next = self.next_chunk(rank, &mut stream, &mut claim).await?;
        }
        if filled != s.message_len {
            return Err(self.reject(
                Rejection::WrongLength,
                format!("rank {rank} sent {filled} values for step {step}, expected {}", s.message_len),
            ));
        }
        let bytes = s.message_len * 4;
        let decoded_before = s.published.borrow().step > step;
        {
            let mut round = s.round.lock().expect("round lock");
            if round.step != step {
                drop(round);
                return self.judge_late(rank, step, message.keep());
            }
            if round.has(rank) {
                return Err(
                    self.reject(Rejection::Duplicate, format!("rank {rank} already contributed to step {step}"))
                );
            }
            round.insert(rank, message.keep(), loss);
        }
        s.metrics.gradient_bytes.inc_by(bytes as u64);
        s.metrics.messages.with_label_values(&[&rank.to_string()]).inc();
        s.arrivals.notify_one();
        Ok(PushReply { step, decoded: decoded_before })
    }

    /// The stream's next chunk (`None` at its end), unless a newer push from the rank comes first.
    async fn next_chunk(
        &self,
        rank: usize,
        stream: &mut (impl Stream<Item = Result<GradientChunk, Status>> + Unpin),
        claim: &mut PushClaim<'_>,
    ) -> Result<Option<GradientChunk>, Status> {
        tokio::select! {
            received = stream.next() => received.transpose(),
            () = claim.superseded() => Err(self.reject(
                Rejection::Superseded,
                format!("rank {rank}: a newer push from the same rank replaced this one"),
            )),
        }
    }

    /// A vector for a recently decoded step: not needed for the sum, but its sender still gets
    /// a verdict (coding.md §5). Anything older than `LATE_ROUNDS` is stale.
    fn judge_late(&self, rank: usize, step: u64, message: Vec<f32>) -> Result<PushReply, Status> {
        let s = &self.shared;
        let verdict = {
            let mut previous = s.previous.lock().expect("previous round lock");
            match previous.iter_mut().find(|p| p.step == step) {
                Some(p) if p.has(rank) => {
                    return Err(
                        self.reject(Rejection::Duplicate, format!("rank {rank} already contributed to step {step}"))
                    );
                }
                Some(p) => p.judge_late(rank, message),
                None => None,
            }
        };
        let Some(verdict) = verdict else {
            return Err(self.stale_or_future(rank, step));
        };
        s.metrics.messages.with_label_values(&[&rank.to_string()]).inc();
        if let draco_core::WorkerVerdict::Suspect(reason) = verdict {
            s.metrics.suspects.with_label_values(&[&rank.to_string(), reason.as_str()]).inc();
            s.status.lock().expect("status lock").name_suspect(step, rank, reason.as_str());
        }
        Ok(PushReply { step, decoded: true })
    }

    /// Refuses, before the body is read, anything but the step being gathered or (to be judged
    /// late) a recently decoded one.
    fn check_step(&self, rank: usize, step: u64) -> Result<(), Status> {
        let round = self.shared.round.lock().expect("round lock");
        if step > round.step || step + (crate::LATE_ROUNDS as u64) < round.step {
            drop(round);
            return Err(self.stale_or_future(rank, step));
        }
        if round.step == step && round.has(rank) {
            return Err(self.reject(Rejection::Duplicate, format!("rank {rank} already contributed to step {step}")));
        }
        Ok(())
    }

    fn stale_or_future(&self, rank: usize, step: u64) -> Status {
        let current = self.shared.round.lock().expect("round lock").step;
        if step < current {
            self.reject(
                Rejection::StaleStep,
                format!("rank {rank} pushed step {step}, the PS is gathering step {current}"),
            )
        } else {
            self.reject(
                Rejection::FutureStep,
                format!("rank {rank} pushed step {step}, the PS is gathering step {current}"),
            )
        }
    }
}

/// The newest push of one rank that started, and the newest that passed its first chunk's
/// checks (numbered in the order they started).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PushGenerations {
    started: u64,
    checked: u64,
}

/// A push's turn to receive for its rank, counted in `draco_pushes_in_flight` while held.
pub(crate) struct PushClaim<'a> {
    shared: &'a Shared,
    rank: usize,
    generation: u64,
    checked: bool,
    newer: tokio::sync::watch::Receiver<PushGenerations>,
}

impl<'a> PushClaim<'a> {
    fn new(shared: &'a Shared, rank: usize) -> PushClaim<'a> {
        let generations = &shared.push_generations[rank];
        let mut generation = 0;
        generations.send_modify(|g| {
            g.started += 1;
            generation = g.started;
        });
        shared.metrics.pushes_in_flight.inc();
        PushClaim { shared, rank, generation, checked: false, newer: generations.subscribe() }
    }

    /// The push passed its first chunk's checks: from now on only a newer push that passed
    /// them too replaces it, and it replaces any older one.
    fn checked(&mut self) {
        let generation = self.generation;
        self.shared.push_generations[self.rank].send_modify(|g| g.checked = g.checked.max(generation));
        self.checked = true;
    }

    /// Resolves once a newer push from the same rank replaces this one.
    async fn superseded(&mut self) {
        let (generation, checked) = (self.generation, self.checked);
        let replaced = |g: &PushGenerations| if checked { g.checked > generation } else { g.started > generation };
        if self.newer.wait_for(replaced).await.is_err() {
            // The PS is shutting down: nothing will replace this push.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for PushClaim<'_> {
    fn drop(&mut self) {
        self.shared.metrics.pushes_in_flight.dec();
    }
}

/// Largest join or fetch request the PS decodes (they are tens of bytes).
const CONTROL_MESSAGE_LIMIT: usize = 64 * 1024;

/// The PS's gRPC routes: `PushGradient` is read straight from the HTTP/2 frames
/// ([`draco_proto::push`]: no codec copies of the gradient), every other method goes to
/// tonic's generated server. Both share one [`Service`].
#[derive(Clone)]
pub struct Routes {
    service: Arc<Service>,
    generated: ParameterServerServer<Service>,
    max_message: usize,
}

impl Routes {
    /// Routes to `service`, accepting gRPC messages up to `max_message` bytes.
    pub fn new(service: Service, max_message: usize) -> Routes {
        let service = Arc::new(service);
        // What reaches the generated server (join, fetch) is a few bytes; tonic decodes a
        // request before the handler authenticates it, so a large limit would let anyone
        // make the PS buffer that much per call.
        let generated = ParameterServerServer::from_arc(service.clone())
            .max_decoding_message_size(CONTROL_MESSAGE_LIMIT)
            .max_encoding_message_size(max_message);
        Routes { service, generated, max_message }
    }
}

impl NamedService for Routes {
    const NAME: &'static str = <ParameterServerServer<Service> as NamedService>::NAME;
}

impl tower_service::Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == PUSH_GRADIENT_PATH {
            let (service, max_message) = (self.service.clone(), self.max_message);
            Box::pin(async move { Ok(service.push_from_frames(request, max_message).await) })
        } else {
            // Checked from the headers before tonic decodes anything: an unknown caller is
            // refused without the PS buffering its request. (The handlers check again.)
            if let Err(status) = self.service.authenticate(&MetadataMap::from_headers(request.headers().clone())) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
            Box::pin(self.generated.call(request))
        }
    }
}

impl Service {
    /// `PushGradient` as it arrives off the wire: the same checks, statuses and counts as the
    /// generated path for everything inside the messages. Broken framing (compressed, over
    /// the size limit, cut off, undecodable) is refused as a counted `bad_chunk`
    /// (InvalidArgument), where tonic's codec answered OutOfRange or Internal, uncounted.
    async fn push_from_frames(&self, request: http::Request<Body>, max_message: usize) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let received = match self.authenticate(&MetadataMap::from_headers(parts.headers)) {
            Ok(rank) => {
                let chunks = ChunkReader::new(body, max_message).map(|r| {
                    r.map_err(|e| match e {
                        ReadError::Malformed(why) => self.reject(Rejection::BadChunk, format!("rank {rank}: {why}")),
                        ReadError::Transport(status) => status,
                    })
                });
                self.receive(rank, chunks).await
            }
            Err(status) => Err(status),
        };
        match received {
            Ok(reply) => draco_proto::push::reply_response(&reply),
            Err(status) => status.into_http(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: impl Stream<Item = Result<ParameterChunk, Status>>) -> Vec<Result<ParameterChunk, Status>> {
        futures::executor::block_on(chunks.collect())
    }

    #[test]
    fn parameter_chunks_cover_the_vector_in_order() {
        let params = Arc::new((0..CHUNK_VALUES * 2 + 3).map(|i| i as f32).collect::<Vec<f32>>());
        let chunks = collect(parameter_chunks(Arc::downgrade(&params), 7, false, params.len()));
        assert_eq!(chunks.len(), 3);
        let mut back = Vec::new();
        for c in chunks {
            let c = c.unwrap();
            assert_eq!((c.step, c.offset, c.total), (7, back.len() as u64, params.len() as u64));
            draco_proto::payload::extend_f32s(&mut back, &c.data);
        }
        assert_eq!(back, *params);
        let empty = collect(parameter_chunks(Arc::downgrade(&Arc::new(Vec::new())), 3, true, 0));
        assert!(empty.len() == 1 && empty[0].as_ref().unwrap().finished);
    }

    #[test]
    fn a_stalled_fetch_does_not_keep_replaced_parameters_alive() {
        let params = Arc::new(vec![1.0f32; CHUNK_VALUES * 2]);
        let mut chunks = Box::pin(parameter_chunks(Arc::downgrade(&params), 4, false, params.len()));
        let first = futures::executor::block_on(chunks.next()).unwrap().unwrap();
        drop(first);
        // The PS publishes step 5: nothing else holds step 4's vector.
        let weak = Arc::downgrade(&params);
        drop(params);
        assert!(weak.upgrade().is_none(), "the fetch stream kept the old parameters");
        let cut = futures::executor::block_on(chunks.next()).unwrap().unwrap_err();
        assert_eq!(cut.code(), tonic::Code::Aborted);
        assert!(cut.message().starts_with(PARAMETERS_REPLACED), "{}", cut.message());
    }
}
