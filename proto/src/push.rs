//! `PushGradient` without the copies tonic's codec makes: the same gRPC call on the wire (any
//! gRPC client or server interoperates: tests check both directions against tonic's generated
//! code), but a gradient's bytes are copied only where they must be.
//!
//! tonic copies every message into an encode buffer on the client and every HTTP/2 DATA frame
//! into a decode buffer on the server. For gradients of millions of values those two copies,
//! and the buffer allocations behind them, cost more than the socket itself. Here the client
//! sends each chunk's payload as the message's own bytes behind a small header, and the server
//! parses messages straight out of the frames HTTP/2 received, handing on the payload as a
//! slice of them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use http_body::{Body as _, Frame};
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;

use crate::CHUNK_VALUES;
use crate::v1::{GradientChunk, PushReply};

/// The HTTP/2 path of the call.
pub const PUSH_GRADIENT_PATH: &str = "/draco.v1.ParameterServer/PushGradient";
/// gRPC's length prefix: a compression flag byte and a big-endian u32 length.
const PREFIX: usize = 5;
/// `data` is field 5, length-delimited.
const DATA_FIELD: u32 = 5;
/// Received frames smaller than this are gathered into one segment rather than queued alone.
const COALESCE_BELOW: usize = 64 * 1024;

/// One coded gradient ready to send: its values as little-endian f32 bytes, cut into chunks
/// at send time without copying.
pub struct GradientPush<'a> {
    pub incarnation: &'a str,
    pub step: u64,
    pub loss: f32,
    pub values: Bytes,
}

impl GradientPush<'_> {
    /// The request body as frames: per chunk, a header (the gRPC prefix, every small field,
    /// then the key and length of `data`) followed by the chunk's payload itself. Protobuf
    /// allows fields in any order, so `data` can come last and travel uncopied.
    pub fn frames(&self) -> Vec<Bytes> {
        let total = (self.values.len() / 4) as u64;
        let chunk_bytes = CHUNK_VALUES * 4;
        let mut frames = Vec::new();
        let mut at = 0;
        while at < self.values.len() {
            let payload = self.values.slice(at..(at + chunk_bytes).min(self.values.len()));
            let fields = GradientChunk {
                incarnation: self.incarnation.to_string(),
                step: self.step,
                offset: (at / 4) as u64,
                total,
                data: Bytes::new(),
                loss: if at == 0 { self.loss } else { 0.0 },
            };
            let data_key_len =
                prost::encoding::key_len(DATA_FIELD) + prost::encoding::encoded_len_varint(payload.len() as u64);
            let message_len = fields.encoded_len() + data_key_len + payload.len();
            let mut header = BytesMut::with_capacity(PREFIX + fields.encoded_len() + data_key_len);
            header.put_u8(0);
            header.put_u32(u32::try_from(message_len).expect("a chunk is far below 4 GiB"));
            fields.encode(&mut header).expect("the header buffer was sized for it");
            prost::encoding::encode_key(DATA_FIELD, prost::encoding::WireType::LengthDelimited, &mut header);
            prost::encoding::encode_varint(payload.len() as u64, &mut header);
            at += payload.len();
            frames.push(header.freeze());
            frames.push(payload);
        }
        frames
    }
}

/// Sends one gradient over `channel` as a `PushGradient` call carrying `metadata` (the rank and
/// token headers) and returns the PS's reply or its status.
pub async fn push_gradient(
    channel: &mut tonic::transport::Channel,
    metadata: &MetadataMap,
    push: &GradientPush<'_>,
) -> Result<PushReply, Status> {
    push_frames(channel, metadata, push.frames()).await
}

/// A `PushGradient` call whose request body is `frames`, taken as already framed gRPC bytes.
/// (Public so tests can send what no gRPC library would.)
pub async fn push_frames(
    channel: &mut tonic::transport::Channel,
    metadata: &MetadataMap,
    frames: Vec<Bytes>,
) -> Result<PushReply, Status> {
    use tower_service::Service;
    let frames = frames.into_iter().map(|b| Ok::<_, Status>(Frame::data(b)));
    let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .version(http::Version::HTTP_2)
        .uri(PUSH_GRADIENT_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(body)
        .map_err(|e| Status::internal(format!("building the PushGradient request: {e}")))?;
    request.headers_mut().extend(metadata.clone().into_headers());
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|e| Status::from_error(e.into()))?;
    let response = channel.call(request).await.map_err(|e| Status::from_error(e.into()))?;
    read_reply(response).await
}

/// The PS's answer to a push that was taken: the reply message, then an OK status in the
/// trailers. (A refusal is tonic's `Status::into_http`, a trailers-only response.)
pub fn reply_response(reply: &PushReply) -> http::Response<Body> {
    let mut message = BytesMut::with_capacity(PREFIX + reply.encoded_len());
    message.put_u8(0);
    message.put_u32(reply.encoded_len() as u32);
    reply.encode(&mut message).expect("the reply buffer was sized for it");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [Ok::<_, Status>(Frame::data(message.freeze())), Ok(Frame::trailers(trailers))];
    let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames))));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

/// The reply of a unary-response call: a trailers-only error, or one message then trailers.
/// Statuses follow gRPC's HTTP mapping, as tonic's client does, so callers classify them the
/// same way (e.g. a reply cut off by a proxy is `Unknown`, a 503 `Unavailable`).
async fn read_reply(response: http::Response<Body>) -> Result<PushReply, Status> {
    /// A PushReply is a few bytes; anything much larger is not one.
    const MAX_REPLY: usize = 64 * 1024;
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(status_of_http(parts.status));
    }
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame?.into_data() {
            Ok(chunk) if data.len() + chunk.len() > MAX_REPLY => {
                return Err(Status::internal(format!("the PS's reply is over {MAX_REPLY} bytes")));
            }
            Ok(chunk) => data.put(chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let status = trailers
        .as_ref()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| Status::unknown("the PS's reply ended without a grpc-status (cut off on the way?)"));
    if status.code() != tonic::Code::Ok {
        return Err(status);
    }
    let declared = data.get(1..PREFIX).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if data.first() != Some(&0) || declared != Some(data.len() - PREFIX) {
        return Err(Status::internal("the PS's reply is not exactly one uncompressed gRPC message"));
    }
    data.advance(PREFIX);
    PushReply::decode(data).map_err(|e| Status::internal(format!("the PS's reply does not decode: {e}")))
}

/// gRPC's mapping of an HTTP status that came without a gRPC status
/// (<https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md>).
fn status_of_http(http_status: http::StatusCode) -> Status {
    use http::StatusCode as H;
    let code = match http_status {
        H::BAD_REQUEST => tonic::Code::Internal,
        H::UNAUTHORIZED => tonic::Code::Unauthenticated,
        H::FORBIDDEN => tonic::Code::PermissionDenied,
        H::NOT_FOUND => tonic::Code::Unimplemented,
        H::TOO_MANY_REQUESTS | H::BAD_GATEWAY | H::SERVICE_UNAVAILABLE | H::GATEWAY_TIMEOUT => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    Status::new(code, format!("the PS answered HTTP {http_status} without a gRPC status"))
}

/// Why a request body could not be read as gradient chunks.
#[derive(Debug)]
pub enum ReadError {
    /// The sender broke the protocol (the message says how): a hostile or broken client.
    Malformed(String),
    /// The body itself failed (the client went away, the connection broke).
    Transport(Status),
}

/// The `GradientChunk` messages of a `PushGradient` request body, parsed from the received
/// HTTP/2 frames without gathering them into a buffer first. A message's declared length is
/// checked against `max_message` before any of its body is kept.
pub struct ChunkReader {
    body: Body,
    /// Received bytes not yet parsed, in order.
    pending: VecDeque<Bytes>,
    pending_len: usize,
    max_message: usize,
    ended: bool,
    /// After an error the stream is over: the rest of the body cannot be trusted to be framed.
    failed: bool,
}

impl ChunkReader {
    pub fn new(body: Body, max_message: usize) -> ChunkReader {
        ChunkReader { body, pending: VecDeque::new(), pending_len: 0, max_message, ended: false, failed: false }
    }

    /// Queues a received frame. Large frames are kept as they are (the payload path: no copy);
    /// small ones are appended to a small last segment, so a sender of tiny frames cannot make
    /// the queue hold one entry (and maybe one whole receive buffer) per few bytes.
    fn queue(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.pending_len += data.len();
        if data.len() < COALESCE_BELOW
            && let Some(last) = self.pending.back_mut()
            && last.len() < COALESCE_BELOW
        {
            // Our own appended segments are unique and reopen without a copy; a slice of
            // HTTP/2's buffer is copied once (it is small).
            let mut merged = std::mem::take(last).try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            merged.extend_from_slice(&data);
            *last = merged.freeze();
            return;
        }
        self.pending.push_back(data);
    }

    /// The next whole message, if it has arrived.
    fn take_message(&mut self) -> Result<Option<GradientChunk>, ReadError> {
        if self.pending_len < PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        for (slot, byte) in prefix.iter_mut().zip(self.pending.iter().flat_map(|part| part.iter())) {
            *slot = *byte;
        }
        if prefix[0] != 0 {
            return Err(ReadError::Malformed(format!(
                "compressed messages (flag {}) are not accepted: send with grpc-encoding identity",
                prefix[0]
            )));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_message {
            return Err(ReadError::Malformed(format!(
                "a message of {len} bytes is over the {}-byte limit",
                self.max_message
            )));
        }
        if self.pending_len < PREFIX + len {
            return Ok(None);
        }
        let mut message = Segments { parts: &mut self.pending, len: PREFIX + len };
        message.advance(PREFIX);
        let chunk = GradientChunk::decode(&mut message)
            .map_err(|e| ReadError::Malformed(format!("a GradientChunk does not decode: {e}")))?;
        self.pending_len -= PREFIX + len;
        Ok(Some(chunk))
    }
}

impl Stream for ChunkReader {
    type Item = Result<GradientChunk, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let item = this.poll_item(cx);
        if let Poll::Ready(Some(Err(_))) = &item {
            this.failed = true;
        }
        item
    }
}

impl ChunkReader {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<GradientChunk, ReadError>>> {
        let this = self;
        loop {
            match this.take_message() {
                Ok(Some(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if this.ended {
                if this.pending_len > 0 {
                    let cut = format!("the stream ended inside a message ({} bytes)", this.pending_len);
                    return Poll::Ready(Some(Err(ReadError::Malformed(cut))));
                }
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.queue(data);
                    }
                }
                Some(Err(status)) => return Poll::Ready(Some(Err(ReadError::Transport(status)))),
                None => this.ended = true,
            }
        }
    }
}

/// The first `len` bytes of a queue of received frames, read as one buffer. Handing out a
/// run of bytes (`copy_to_bytes`, which prost uses for `bytes` fields) slices the frame it
/// lies in instead of copying, unless it straddles two frames.
struct Segments<'a> {
    parts: &'a mut VecDeque<Bytes>,
    len: usize,
}

impl Buf for Segments<'_> {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.parts.front() {
            Some(front) => &front[..front.len().min(self.len)],
            None => &[],
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the message");
        self.len -= cnt;
        while cnt > 0 {
            let front = self.parts.front_mut().expect("len counts queued bytes");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.len, "copy_to_bytes past the end of the message");
        match self.parts.front_mut() {
            Some(front) if front.len() >= len => {
                self.len -= len;
                let out = front.split_to(len);
                if front.is_empty() {
                    self.parts.pop_front();
                }
                out
            }
            _ => {
                let mut out = BytesMut::with_capacity(len);
                out.put(Buf::take(&mut *self, len));
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::payload::{f32s_to_bytes, into_le_bytes};

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
    }

    /// A body delivering `bytes` cut into frames of `frame` bytes.
    fn body_of(bytes: &[u8], frame: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> =
            bytes.chunks(frame.max(1)).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    }

    async fn read_all(body: Body, max_message: usize) -> Vec<Result<GradientChunk, String>> {
        ChunkReader::new(body, max_message)
            .map(|r| {
                r.map_err(|e| match e {
                    ReadError::Malformed(m) => m,
                    ReadError::Transport(s) => format!("transport: {s}"),
                })
            })
            .collect()
            .await
    }

    /// Whole `GradientChunk`s, as tonic's generated client would frame them.
    fn standard_framing(chunks: &[GradientChunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.push(0);
            out.extend_from_slice(&(c.encoded_len() as u32).to_be_bytes());
            c.encode(&mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn our_frames_parse_back_into_contiguous_chunks_however_the_bytes_are_split() {
        let v = values(2 * CHUNK_VALUES + 3);
        let push = GradientPush { incarnation: "inc", step: 9, loss: 0.25, values: into_le_bytes(v.clone()) };
        let wire: Vec<u8> = push.frames().iter().flat_map(|b| b.to_vec()).collect();
        for frame in [1, 7, 4096, 1 << 20, wire.len()] {
            let chunks = read_all(body_of(&wire, frame), 4 << 20).await;
            assert_eq!(chunks.len(), 3, "frames of {frame} bytes");
            let mut back = Vec::new();
            for (i, c) in chunks.into_iter().enumerate() {
                let c = c.unwrap();
                assert_eq!((c.incarnation.as_str(), c.step, c.total), ("inc", 9, v.len() as u64));
                assert_eq!(c.offset, back.len() as u64);
                assert_eq!(c.loss, if i == 0 { 0.25 } else { 0.0 });
                assert!(c.data.len() <= CHUNK_VALUES * 4);
                crate::payload::extend_f32s(&mut back, &c.data);
            }
            assert_eq!(back, v);
        }
        let empty = GradientPush { incarnation: "inc", step: 0, loss: 1.0, values: Bytes::new() };
        assert!(empty.frames().is_empty());
    }

    #[tokio::test]
    async fn reads_standard_protobuf_framing_too() {
        let chunks = vec![
            GradientChunk {
                incarnation: "x".into(),
                step: 3,
                offset: 0,
                total: 5,
                data: f32s_to_bytes(&[1.0, 2.0]),
                loss: 0.5,
            },
            GradientChunk {
                incarnation: "x".into(),
                step: 3,
                offset: 2,
                total: 5,
                data: f32s_to_bytes(&[3.0; 3]),
                loss: 0.0,
            },
        ];
        let wire = standard_framing(&chunks);
        for frame in [1, 3, 5, 6, 64] {
            let got: Vec<GradientChunk> =
                read_all(body_of(&wire, frame), 1024).await.into_iter().map(Result::unwrap).collect();
            assert_eq!(got, chunks, "frames of {frame} bytes");
        }
    }

    #[tokio::test]
    async fn refuses_broken_framing_with_a_reason() {
        let one = standard_framing(&[GradientChunk { step: 1, data: f32s_to_bytes(&[1.0; 8]), ..Default::default() }]);
        // Declared over the limit: refused from the prefix alone, before the body arrives.
        let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 10]);
        let got = read_all(body_of(&huge, 5), 4 << 20).await;
        assert!(got[0].as_ref().unwrap_err().contains("4294967295 bytes is over the 4194304-byte limit"), "{got:?}");
        let mut compressed = one.clone();
        compressed[0] = 1;
        let got = read_all(body_of(&compressed, 64), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("compressed messages (flag 1)"), "{got:?}");
        let got = read_all(body_of(&one[..one.len() - 3], 64), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("ended inside a message"), "{got:?}");
        assert_eq!(got.len(), 1);
        let garbage = [0u8, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let got = read_all(body_of(&garbage, 64), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("does not decode"), "{got:?}");
        assert!(read_all(body_of(&[], 64), 1024).await.is_empty());
    }

    #[tokio::test]
    async fn payloads_are_slices_of_the_received_frame_not_copies() {
        let push = GradientPush { incarnation: "inc", step: 1, loss: 0.0, values: into_le_bytes(values(1000)) };
        let wire = Bytes::from(push.frames().iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>());
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, Status>(Frame::data(
            wire.clone(),
        ))])));
        let chunks = read_all(body, 1 << 20).await;
        let data = &chunks[0].as_ref().unwrap().data;
        assert_eq!(data.len(), 4000);
        assert!(range.contains(&(data.as_ptr() as usize)), "the payload was copied out of the frame");
    }

    #[test]
    fn tiny_frames_do_not_grow_the_queue_entry_by_entry() {
        let mut reader = ChunkReader::new(Body::empty(), 4 << 20);
        for i in 0..200_000u32 {
            reader.queue(Bytes::copy_from_slice(&[i as u8]));
        }
        assert_eq!(reader.pending_len, 200_000);
        assert!(reader.pending.len() <= 4, "{} entries", reader.pending.len());
        // Large frames stay whole (the payload path), small ones after them start a new segment.
        reader.queue(Bytes::from(vec![1u8; 1 << 20]));
        reader.queue(Bytes::from_static(b"xy"));
        let sizes: Vec<usize> = reader.pending.iter().rev().take(2).map(Bytes::len).collect();
        assert_eq!(sizes, [2, 1 << 20]);
        let all: Vec<u8> = reader.pending.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(all[..3], [0, 1, 2]);
        assert_eq!(all[199_999], (199_999u32 % 256) as u8);
    }

    fn reply(status: u16, body: Vec<Frame<Bytes>>) -> http::Response<Body> {
        let frames = body.into_iter().map(Ok::<_, Status>);
        let mut r = http::Response::new(Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames))));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r
    }

    #[tokio::test]
    async fn replies_map_to_the_statuses_a_grpc_client_would_give() {
        let ok = reply_response(&PushReply { step: 4, decoded: true });
        assert_eq!(read_reply(ok).await.unwrap(), PushReply { step: 4, decoded: true });
        // Cut off before the trailers: Unknown (transient for the worker), as tonic says.
        let mut message = vec![0u8, 0, 0, 0, 2];
        PushReply { step: 4, decoded: false }.encode(&mut message).unwrap();
        message[4] = (message.len() - 5) as u8;
        let cut = reply(200, vec![Frame::data(Bytes::from(message.clone()))]);
        assert_eq!(read_reply(cut).await.unwrap_err().code(), tonic::Code::Unknown);
        for (http_status, code) in
            [(503, tonic::Code::Unavailable), (404, tonic::Code::Unimplemented), (500, tonic::Code::Unknown)]
        {
            assert_eq!(read_reply(reply(http_status, vec![])).await.unwrap_err().code(), code, "HTTP {http_status}");
        }
        // Two messages where one is expected: refused, not read as one.
        let mut ok_trailers = http::HeaderMap::new();
        ok_trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let twice = [message.clone(), message].concat();
        let doubled = reply(200, vec![Frame::data(Bytes::from(twice)), Frame::trailers(ok_trailers)]);
        assert!(read_reply(doubled).await.unwrap_err().message().contains("not exactly one"));
    }

    /// tonic's generated server on a real socket, recording what it received.
    struct Recorder(tokio::sync::mpsc::UnboundedSender<(MetadataMap, Vec<GradientChunk>)>);

    #[tonic::async_trait]
    impl crate::v1::parameter_server_server::ParameterServer for Recorder {
        async fn join(
            &self,
            _: tonic::Request<crate::v1::JoinRequest>,
        ) -> Result<tonic::Response<crate::v1::JoinReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        type FetchParametersStream = futures::stream::Empty<Result<crate::v1::ParameterChunk, Status>>;
        async fn fetch_parameters(
            &self,
            _: tonic::Request<crate::v1::FetchRequest>,
        ) -> Result<tonic::Response<Self::FetchParametersStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn push_gradient(
            &self,
            request: tonic::Request<tonic::Streaming<GradientChunk>>,
        ) -> Result<tonic::Response<PushReply>, Status> {
            let metadata = request.metadata().clone();
            let chunks: Vec<GradientChunk> = request.into_inner().map(Result::unwrap).collect().await;
            let step = chunks.first().map(|c| c.step).unwrap_or_default();
            self.0.send((metadata, chunks)).unwrap();
            if step == 13 {
                return Err(Status::already_exists("duplicate: step 13 again"));
            }
            Ok(tonic::Response::new(PushReply { step, decoded: true }))
        }
    }

    #[tokio::test]
    async fn tonics_generated_server_understands_our_client() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(crate::v1::parameter_server_server::ParameterServerServer::new(Recorder(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut metadata = MetadataMap::new();
        metadata.insert(crate::RANK_HEADER, "2".parse().unwrap());
        let v = values(CHUNK_VALUES + 10);
        let push = GradientPush { incarnation: "inc", step: 12, loss: 0.75, values: into_le_bytes(v.clone()) };
        let reply = push_gradient(&mut channel, &metadata, &push).await.unwrap();
        assert_eq!(reply, PushReply { step: 12, decoded: true });
        let (seen, chunks) = rx.recv().await.unwrap();
        assert_eq!(seen.get(crate::RANK_HEADER).unwrap(), "2");
        assert_eq!(
            chunks.iter().map(|c| (c.offset, c.loss)).collect::<Vec<_>>(),
            [(0, 0.75), (CHUNK_VALUES as u64, 0.0)]
        );
        let mut back = Vec::new();
        chunks.iter().for_each(|c| crate::payload::extend_f32s(&mut back, &c.data));
        assert_eq!(back, v);
        // A refusal arrives as the server's status, code and message intact.
        let refused = GradientPush { step: 13, ..push };
        let status = push_gradient(&mut channel, &metadata, &refused).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (tonic::Code::AlreadyExists, "duplicate: step 13 again"));
    }
}
