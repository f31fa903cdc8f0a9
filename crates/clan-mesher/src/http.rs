//! The local HTTP API (loopback only) and its blocking client, used by `clan mesher file …`
//! and `clan mesher status`. Deliberately tiny HTTP/1.1: one request per connection,
//! `Content-Length` bodies, bounded header and body sizes.
//!
//! | request                | answer                                              |
//! |------------------------|-----------------------------------------------------|
//! | `GET /v1/status`       | JSON status                                         |
//! | `GET /v1/files`        | JSON list of current records                        |
//! | `GET /v1/files/<name>` | the content, 404 when absent or deleted             |
//! | `POST /v1/files`       | an upload (signed record + content), 200 or 4xx     |
//! | `GET /metrics`         | Prometheus text                                     |

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::bytes::{DecodeError, Reader, Writer};
use crate::name::FileName;
use crate::node::{Handle, PublishError};
use crate::policy::RejectReason;
use crate::record::{Kind, Record, MAX_FILE_SIZE};

/// Largest request body: a full file, its record and framing.
pub const MAX_BODY: usize = MAX_FILE_SIZE as usize + 64 * 1024;
const MAX_HEADER_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// Encodes an upload: the signed record and the content.
pub fn encode_upload(record: &Record, content: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(&record.to_bytes()).bytes(content);
    w.0
}

pub fn decode_upload(raw: &[u8]) -> Result<(Record, Vec<u8>), DecodeError> {
    let mut r = Reader::new(raw);
    let record = Record::from_bytes(r.bytes("upload record")?)?;
    let content = r.bytes("upload content")?.to_vec();
    r.finish()?;
    Ok((record, content))
}

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, handle: Handle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, handle).await {
                tracing::debug!(%error, "HTTP connection failed");
            }
        });
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
    fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }
}

async fn connection(stream: TcpStream, handle: Handle) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    (&mut reader)
        .take(MAX_HEADER_LINE)
        .read_line(&mut line)
        .await?;
    let mut words = line.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or("").to_owned(),
        words.next().unwrap_or("").to_owned(),
    );
    let mut content_length = 0usize;
    for _ in 0..=MAX_HEADERS {
        let mut header = String::new();
        (&mut reader)
            .take(MAX_HEADER_LINE)
            .read_line(&mut header)
            .await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            if key.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(usize::MAX);
            }
        }
    }
    let reply = if content_length > MAX_BODY {
        Reply::text(413, format!("body larger than {MAX_BODY} bytes"))
    } else {
        let mut body = Vec::with_capacity(content_length.min(64 * 1024));
        (&mut reader)
            .take(content_length as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() != content_length {
            return Ok(());
        }
        route(&method, &path, &body, &handle).await
    };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        if reply.status < 400 { "OK" } else { "Error" },
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

async fn route(method: &str, path: &str, body: &[u8], handle: &Handle) -> Reply {
    match (method, path) {
        ("GET", "/v1/status") => match handle.status().await {
            Some(status) => Reply::json(&serde_json::json!({
                "peer_id": status.peer_id.to_string(),
                "listen_addrs": status.listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "peers": status.peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "files": status.files,
                "accepted": status.metrics.accepted,
                "fetches": status.metrics.fetches,
                "rejected": status.metrics.rejected.iter().map(|(r, n)| (r.as_str().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
                "bootstrap": status.bootstrap.iter().map(|b| serde_json::json!({
                    "address": b.address.to_string(),
                    "connected": b.connected,
                    "error": b.error,
                })).collect::<Vec<_>>(),
                "unresolved_bootstrap": status.unresolved_bootstrap,
            })),
            None => Reply::text(503, "mesher stopped"),
        },
        ("GET", "/metrics") => match handle.status().await {
            Some(status) => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: status
                    .metrics
                    .render(status.files, status.peers.len())
                    .into_bytes(),
            },
            None => Reply::text(503, "mesher stopped"),
        },
        ("GET", "/v1/files") => {
            let records = handle.list().await;
            Reply::json(&serde_json::Value::Array(
                records.iter().map(record_json).collect(),
            ))
        }
        ("GET", path) if path.starts_with("/v1/files/") => {
            match FileName::parse(&path["/v1/files/".len()..]) {
                Ok(name) => match handle.get(&name).await {
                    Some((_, content)) => Reply {
                        status: 200,
                        content_type: "application/octet-stream",
                        body: content,
                    },
                    None => Reply::text(404, format!("no file `{name}`")),
                },
                Err(error) => Reply::text(400, error.to_string()),
            }
        }
        ("POST", "/v1/files") => match decode_upload(body) {
            Ok((record, content)) => match handle.publish(record, content).await {
                Ok(()) => Reply::text(200, "accepted"),
                Err(PublishError::Rejected { reason, .. }) => {
                    Reply::text(rejection_status(reason), reason.as_str())
                }
                Err(PublishError::Stopped) => Reply::text(503, "mesher stopped"),
            },
            Err(error) => Reply::text(400, format!("malformed upload: {error}")),
        },
        _ => Reply::text(404, "unknown request"),
    }
}

fn rejection_status(reason: RejectReason) -> u16 {
    match reason {
        RejectReason::BadSignature | RejectReason::NotAllowed | RejectReason::BadCertificate => 403,
        RejectReason::Stale | RejectReason::PathConflict => 409,
        RejectReason::TooLarge => 413,
        RejectReason::Storage => 500,
        _ => 400,
    }
}

fn record_json(record: &Record) -> serde_json::Value {
    serde_json::json!({
        "name": record.name.as_str(),
        "kind": match record.kind { Kind::Update => "update", Kind::Tombstone => "tombstone" },
        "signed_at": record.signed_at,
        "size": record.size,
        "sha256": record.hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "signer": record.signer.to_string(),
        "valid_until": record.valid_until,
    })
}

/// The API could not be reached or answered something unreadable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to reach the mesher API at `{address}`")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the mesher API at `{address}` sent a malformed answer")]
    Malformed { address: SocketAddr },
}

/// Sends one request and returns the status and body.
pub fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    let connect = |source| ClientError::Connect { address, source };
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(connect)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(connect)?;
    stream.write_all(body).map_err(connect)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_BODY as u64 + 8 * 1024)
        .read_to_end(&mut answer)
        .map_err(connect)?;
    let malformed = || ClientError::Malformed { address };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| malformed())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// Its hint comes from the caller, who knows which daemon it meant.
impl clan_error::Hint for ClientError {}

clan_error::register!(ClientError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn upload_round_trip() {
        let key = SecretKey::generate();
        let record = Record::sign_update(
            &key,
            key.public(),
            FileName::parse("a").unwrap(),
            b"x",
            1,
            None,
        );
        assert_eq!(
            decode_upload(&encode_upload(&record, b"x")),
            Ok((record, b"x".to_vec()))
        );
        assert!(decode_upload(b"\xff\xff\xff\xff").is_err());
    }
}
