//! The peer protocol `/clan-mesher/1`: one request and one response per libp2p stream, each a
//! frame of a `u32` big-endian length and a tagged message. The decoder checks the length
//! against the limit for its direction before reading the body and grows its buffer only as
//! bytes actually arrive, so a forged length prefix costs four bytes, not an allocation.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::bytes::{DecodeError, Reader, Writer};
use crate::certificate::Certificate;
use crate::index::{Prefix, Summary, MAX_DEPTH};
use crate::name::FileName;
use crate::policy::RejectReason;
use crate::record::{Record, MAX_FILE_SIZE};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/clan-mesher/1");
/// Largest request or non-content response.
pub const MAX_CONTROL_FRAME: usize = 1024 * 1024;
/// Largest response: a full file plus framing.
pub const MAX_RESPONSE_FRAME: usize = MAX_FILE_SIZE as usize + 1024;
/// Most prefixes asked for in one `Nodes` request.
pub const MAX_PREFIXES: usize = 64;
/// Smallest encoded record (no certificate, one-byte name).
const MIN_RECORD_LEN: usize = 1 + 32 + 3 + 8 + 8 + 32 + 9 + 32 + 64 + 1;

/// What one node asks another. Announcements are the most frequent request, so they carry
/// their record inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The sender's membership certificate; must come before anything else.
    Hello(Certificate),
    /// A new version the sender accepted.
    Announce(Record),
    /// The sender's root summary; answered `InSync` or with the root's children.
    Digest(Summary),
    /// Summaries or records under each prefix.
    Nodes(Vec<Prefix>),
    /// The content of the record with this digest.
    Fetch { name: FileName, digest: [u8; 32] },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Hello(Certificate),
    Ack,
    InSync,
    Nodes(Vec<NodeReply>),
    Content(Vec<u8>),
    NotFound,
    Refused(RejectReason),
}

/// The answer for one prefix: its children's summaries, or its records when few.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeReply {
    Split(Box<[Summary; 16]>),
    Leaf(Vec<Record>),
}

impl Request {
    /// The `kind` label of the traffic metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Announce(_) => "announce",
            Self::Digest(_) => "digest",
            Self::Nodes(_) => "nodes",
            Self::Fetch { .. } => "fetch",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Self::Hello(certificate) => certificate.encode(w.u8(1)),
            Self::Announce(record) => record.encode(w.u8(2)),
            Self::Digest(summary) => encode_summary(w.u8(3), summary),
            Self::Nodes(prefixes) => {
                w.u8(4).u32(prefixes.len() as u32);
                for prefix in prefixes {
                    w.u8(prefix.depth)
                        .fixed(&prefix.key[..usize::from(prefix.depth.div_ceil(2))]);
                }
            }
            Self::Fetch { name, digest } => {
                w.u8(5).str(name.as_str()).fixed(digest);
            }
        }
        w.0
    }

    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(raw);
        let request = match r.u8("request tag")? {
            1 => Self::Hello(Certificate::decode(&mut r)?),
            2 => Self::Announce(Record::decode(&mut r)?),
            3 => Self::Digest(decode_summary(&mut r)?),
            4 => {
                let count = r.count("prefix count", 1)?;
                if count > MAX_PREFIXES {
                    return Err(DecodeError::Invalid {
                        what: "prefix count",
                        detail: format!("{count} > {MAX_PREFIXES}"),
                    });
                }
                let mut prefixes = Vec::with_capacity(count);
                for _ in 0..count {
                    let depth = r.u8("prefix depth")?;
                    if depth > MAX_DEPTH {
                        return Err(DecodeError::Invalid {
                            what: "prefix depth",
                            detail: depth.to_string(),
                        });
                    }
                    let mut key = [0; 32];
                    let len = usize::from(depth.div_ceil(2));
                    key[..len].copy_from_slice(r.take(len, "prefix key")?);
                    prefixes.extend(Prefix::new(depth, key));
                }
                Self::Nodes(prefixes)
            }
            5 => {
                let name =
                    FileName::parse(r.str("fetch name")?).map_err(|e| DecodeError::Invalid {
                        what: "fetch name",
                        detail: e.to_string(),
                    })?;
                Self::Fetch {
                    name,
                    digest: r.array("fetch digest")?,
                }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "request",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Ack => "ack",
            Self::InSync => "in_sync",
            Self::Nodes(_) => "nodes",
            Self::Content(_) => "content",
            Self::NotFound => "not_found",
            Self::Refused(_) => "refused",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Self::Hello(certificate) => certificate.encode(w.u8(1)),
            Self::Ack => {
                w.u8(2);
            }
            Self::InSync => {
                w.u8(3);
            }
            Self::Nodes(replies) => {
                w.u8(4).u32(replies.len() as u32);
                for reply in replies {
                    match reply {
                        NodeReply::Split(children) => {
                            w.u8(1);
                            children
                                .iter()
                                .for_each(|child| encode_summary(&mut w, child));
                        }
                        NodeReply::Leaf(records) => {
                            w.u8(2).u32(records.len() as u32);
                            records.iter().for_each(|record| record.encode(&mut w));
                        }
                    }
                }
            }
            Self::Content(bytes) => {
                w.u8(5).bytes(bytes);
            }
            Self::NotFound => {
                w.u8(6);
            }
            Self::Refused(reason) => {
                w.u8(7).str(reason.as_str());
            }
        }
        w.0
    }

    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(raw);
        let response = match r.u8("response tag")? {
            1 => Self::Hello(Certificate::decode(&mut r)?),
            2 => Self::Ack,
            3 => Self::InSync,
            4 => {
                let count = r.count("node reply count", 1)?;
                let mut replies = Vec::with_capacity(count);
                for _ in 0..count {
                    replies.push(match r.u8("node reply tag")? {
                        1 => {
                            let mut children = Box::new([Summary::default(); 16]);
                            for child in children.iter_mut() {
                                *child = decode_summary(&mut r)?;
                            }
                            NodeReply::Split(children)
                        }
                        2 => {
                            let count = r.count("leaf record count", MIN_RECORD_LEN)?;
                            let mut records = Vec::with_capacity(count);
                            for _ in 0..count {
                                records.push(Record::decode(&mut r)?);
                            }
                            NodeReply::Leaf(records)
                        }
                        tag => {
                            return Err(DecodeError::UnknownTag {
                                what: "node reply",
                                tag,
                            })
                        }
                    });
                }
                Self::Nodes(replies)
            }
            5 => Self::Content(r.bytes("content")?.to_vec()),
            6 => Self::NotFound,
            7 => {
                let text = r.str("refusal reason")?;
                Self::Refused(
                    RejectReason::parse(text).ok_or_else(|| DecodeError::Invalid {
                        what: "refusal reason",
                        detail: text.chars().take(40).collect(),
                    })?,
                )
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(response)
    }

    /// Bytes on the wire including the length prefix.
    pub fn wire_len(&self) -> usize {
        match self {
            Self::Content(bytes) => 4 + 1 + 4 + bytes.len(),
            other => 4 + other.encode().len(),
        }
    }
}

fn encode_summary(w: &mut Writer, summary: &Summary) {
    w.u32(summary.count).fixed(&summary.digest);
}

fn decode_summary(r: &mut Reader<'_>) -> Result<Summary, DecodeError> {
    Ok(Summary {
        count: r.u32("summary count")?,
        digest: r.array("summary digest")?,
    })
}

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    io.take(len as u64).read_to_end(&mut payload).await?;
    if payload.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "truncated frame",
        ));
    }
    Ok(payload)
}

pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.flush().await
}

fn invalid(error: DecodeError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

/// A request as read off the wire: decoded, or why not. Inbound decode failures are handed to
/// the node (libp2p would drop them silently) so it can count them and disconnect the sender;
/// truncated streams stay I/O errors, which libp2p drops.
pub type Inbound = Result<Request, DecodeError>;

/// The request-response codec for [`PROTOCOL`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Inbound> {
        match read_frame(io, MAX_CONTROL_FRAME).await {
            Ok(payload) => Ok(Request::decode(&payload)),
            // A cut-off stream is what honest peers produce when a connection or stream
            // closes early; only bytes that could never be valid mark the sender as hostile.
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                Ok(Err(DecodeError::Invalid {
                    what: "frame",
                    detail: error.to_string(),
                }))
            }
            Err(error) => Err(error),
        }
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Response> {
        Response::decode(&read_frame(io, MAX_RESPONSE_FRAME).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Inbound,
    ) -> std::io::Result<()> {
        let request = request
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        write_frame(io, &request.encode()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> std::io::Result<()> {
        write_frame(io, &response.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use futures::executor::block_on;

    fn sample_record() -> Record {
        let key = SecretKey::generate();
        Record::sign_update(
            &key,
            key.public(),
            FileName::parse("a/b").unwrap(),
            b"x",
            1,
            None,
        )
    }

    #[test]
    fn every_message_round_trips() {
        let key = SecretKey::generate();
        let certificate = Certificate::sign(&key, key.public(), 1, None);
        let prefix = Prefix::ROOT.child(5).unwrap().child(7).unwrap();
        let requests = [
            Request::Hello(certificate.clone()),
            Request::Announce(sample_record()),
            Request::Digest(Summary {
                count: 3,
                digest: [9; 16],
            }),
            Request::Nodes(vec![Prefix::ROOT, prefix]),
            Request::Fetch {
                name: FileName::parse("x").unwrap(),
                digest: [1; 32],
            },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
        let responses = [
            Response::Hello(certificate),
            Response::Ack,
            Response::InSync,
            Response::Nodes(vec![
                NodeReply::Split(Box::new(
                    [Summary {
                        count: 1,
                        digest: [2; 16],
                    }; 16],
                )),
                NodeReply::Leaf(vec![sample_record()]),
            ]),
            Response::Content(b"hello".to_vec()),
            Response::NotFound,
            Response::Refused(RejectReason::UnverifiedPeer),
        ];
        for response in responses {
            assert_eq!(response.wire_len(), 4 + response.encode().len());
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_after_four_bytes() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let error = block_on(read_frame(&mut input, MAX_CONTROL_FRAME)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(input, &[1, 2, 3], "the body must not be read");
    }

    #[test]
    fn truncated_frames_and_messages_are_errors() {
        let mut short: &[u8] = &[0, 0, 0, 10, 1, 2];
        assert!(block_on(read_frame(&mut short, MAX_CONTROL_FRAME)).is_err());
        let full = Request::Announce(sample_record()).encode();
        for cut in 0..full.len() {
            assert!(
                Request::decode(&full[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        let mut w = Writer::default();
        w.u8(4).u32(u32::MAX);
        assert!(matches!(
            Response::decode(&w.0),
            Err(DecodeError::Truncated { .. })
        ));
        let mut w = Writer::default();
        w.u8(4).u32(1).u8(2).u32(u32::MAX);
        assert!(matches!(
            Response::decode(&w.0),
            Err(DecodeError::Truncated { .. })
        ));
        let mut w = Writer::default();
        w.u8(5).u32(u32::MAX);
        assert!(Response::decode(&w.0).is_err());
    }
}
