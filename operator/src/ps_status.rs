//! Reading the PS's `/status` document over plain HTTP/1.0 (one small GET; no HTTP client
//! crate needed). Used by the operator and by `draco run`'s progress line.

use std::time::Duration;

use draco_core::status::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `address` (host:port); the body of a 200 answer, `None` otherwise (not up
/// yet, refused, timed out, another status).
pub async fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await.ok()?.ok()?;
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    // The status document is small; cap what a confused peer can make us buffer.
    tokio::time::timeout(Duration::from_secs(5), (&mut stream).take(16 << 20).read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    (status_line.starts_with("HTTP/1.0 200") || status_line.starts_with("HTTP/1.1 200")).then(|| body.to_string())
}

/// The PS's status, when it answers with a valid document.
pub async fn fetch(address: &str) -> Option<Status> {
    let body = http_get(address, "/status").await?;
    match serde_json::from_str(&body) {
        Ok(status) => Some(status),
        Err(e) => {
            tracing::warn!(%address, "the PS's /status is not a status document: {e}");
            None
        }
    }
}
