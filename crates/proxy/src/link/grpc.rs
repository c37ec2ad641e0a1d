//! gRPC calls made on `h2` directly: a unary call and a server-streaming call, each sending
//! one length-prefixed protobuf message from the calling task and reading the answer there.
//!
//! tonic's client puts a buffer task in front of the connection, and hyper spawns a task per
//! request to pump its body; on the proxy's hot path those were two task hand-offs per call.
//! Here the request's headers and its one DATA frame go straight to the connection task.
//!
//! Invariants: a response is accepted only with HTTP status 200, `grpc-status` 0 (in the
//! trailers, or in the headers of a trailers-only answer) and uncompressed messages; anything
//! else is a [`Status`] like the one tonic would report. Dropping a call's future resets its
//! stream (h2 sends RST_STREAM when both halves of a stream are dropped).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::BoxStream;
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The request half of one HTTP/2 connection, ready to open a stream.
pub(crate) type Sender = h2::client::SendRequest<Bytes>;

/// Largest message in either direction.
const MAX_MESSAGE: usize = super::INTERNAL_MAX_MESSAGE_BYTES;

/// Makes unary call `path` (`/package.Service/Method`) to `authority` on `sender`: `metadata`
/// (with its `grpc-timeout`) as headers, `message` as the body; decodes the one message of
/// the answer.
pub(crate) async fn unary<Q, R>(
    sender: Sender,
    authority: &Authority,
    path: &'static str,
    metadata: MetadataMap,
    message: &Q,
) -> Result<R, Status>
where
    Q: prost::Message,
    R: prost::Message + Default,
{
    let mut body = open(sender, authority, path, metadata, message).await?;
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(transport)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > MAX_MESSAGE + 5 {
            return Err(Status::resource_exhausted(format!(
                "the broker's answer exceeds {MAX_MESSAGE} bytes"
            )));
        }
        data.extend_from_slice(&chunk);
    }
    trailer_status(body.trailers().await.map_err(transport)?)?;
    let mut frames = Frames { buf: data };
    let message = frames
        .next_message()?
        .ok_or_else(|| Status::internal("the broker answered without a message"))?;
    if !frames.buf.is_empty() {
        return Err(Status::internal(
            "the broker answered a unary call with more than one message",
        ));
    }
    R::decode(message).map_err(|e| Status::internal(format!("decoding the broker's answer: {e}")))
}

/// Makes server-streaming call `path` on `sender` and returns the stream of its messages; the
/// stream ends after the last message with the call's final status (an error, or nothing).
pub(crate) async fn server_streaming<Q, R>(
    sender: Sender,
    authority: &Authority,
    path: &'static str,
    metadata: MetadataMap,
    message: &Q,
) -> Result<BoxStream<'static, Result<R, Status>>, Status>
where
    Q: prost::Message,
    R: prost::Message + Default + Send + 'static,
{
    let body = open(sender, authority, path, metadata, message).await?;
    let state = (Some(body), Frames::default());
    Ok(Box::pin(futures::stream::unfold(
        state,
        |(body, mut frames)| async move {
            let mut body = body?;
            loop {
                match frames.next_message() {
                    Ok(Some(m)) => {
                        let item = R::decode(m).map_err(|e| {
                            Status::internal(format!("decoding the broker's message: {e}"))
                        });
                        return Some((item, (Some(body), frames)));
                    }
                    Ok(None) => {}
                    Err(e) => return Some((Err(e), (None, frames))),
                }
                match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        frames.buf.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => return Some((Err(transport(e)), (None, frames))),
                    None => {
                        let end = match body.trailers().await {
                            Ok(t) => trailer_status(t).and_then(|()| {
                                if frames.buf.is_empty() {
                                    Ok(())
                                } else {
                                    Err(Status::internal("the broker's stream ended mid-message"))
                                }
                            }),
                            Err(e) => Err(transport(e)),
                        };
                        return end.err().map(|e| (Err(e), (None, frames)));
                    }
                }
            }
        },
    )))
}

/// Sends the request (headers and one DATA frame that ends the stream) and waits for the
/// response headers; returns the response body once the headers say the call goes on.
async fn open<Q: prost::Message>(
    sender: Sender,
    authority: &Authority,
    path: &'static str,
    metadata: MetadataMap,
    message: &Q,
) -> Result<h2::RecvStream, Status> {
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(PathAndQuery::from_static(path))
        .build()
        .map_err(|e| Status::internal(format!("building the URI of {path}: {e}")))?;
    let mut head = http::Request::new(());
    *head.method_mut() = http::Method::POST;
    *head.uri_mut() = uri;
    let headers = head.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let body = frame(message)?;

    let mut sender = sender;
    let (response, mut stream) = sender.send_request(head, false).map_err(transport)?;
    stream.send_data(body, true).map_err(transport)?;
    let response = response.await.map_err(transport)?;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "HTTP status {} from the broker",
            parts.status
        )));
    }
    // A trailers-only answer (an error before any message) has the status in its headers.
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    Ok(body)
}

/// The status of a call's trailers: `Ok` for `grpc-status: 0`.
fn trailer_status(trailers: Option<http::HeaderMap>) -> Result<(), Status> {
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == tonic::Code::Ok => Ok(()),
        Some(status) => Err(status),
        None => Err(Status::internal("the broker's answer has no grpc-status")),
    }
}

/// `message` as one gRPC frame: no compression, big-endian length, the encoded message.
pub(crate) fn frame(message: &impl prost::Message) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_MESSAGE)
        .ok_or_else(|| {
            Status::resource_exhausted(format!(
                "a request of {len} bytes exceeds the internal limit of {MAX_MESSAGE} bytes"
            ))
        })?;
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    message
        .encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding the request: {e}")))?;
    Ok(buf.freeze())
}

/// gRPC frames arriving in pieces.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    /// The next complete message, if one has arrived.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if compressed != 0 {
            return Err(Status::internal(
                "the broker compressed a message, which the proxy did not ask for",
            ));
        }
        if len > MAX_MESSAGE {
            return Err(Status::resource_exhausted(format!(
                "a broker message of {len} bytes exceeds {MAX_MESSAGE} bytes"
            )));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// A failure of the connection or stream, as tonic reports one.
pub(crate) fn transport(e: h2::Error) -> Status {
    let code = if e.is_io() || e.is_go_away() {
        tonic::Code::Unavailable
    } else if e.reason() == Some(h2::Reason::CANCEL) {
        tonic::Code::Cancelled
    } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        tonic::Code::Unavailable
    } else {
        tonic::Code::Internal
    };
    Status::new(code, format!("internal link: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{Code, SendMessageResponse, Status as PbStatus};

    fn response() -> SendMessageResponse {
        SendMessageResponse {
            status: Some(PbStatus {
                code: Code::Ok as i32,
                message: "fine".into(),
            }),
            entries: vec![],
        }
    }

    #[test]
    fn given_frames_in_pieces_when_read_should_yield_whole_messages() {
        let framed = frame(&response()).unwrap();
        let mut frames = Frames::default();
        let twice = [framed.clone(), framed].concat();
        frames.buf.extend_from_slice(&twice[..3]);
        assert!(frames.next_message().unwrap().is_none());
        frames.buf.extend_from_slice(&twice[3..10]);
        assert!(frames.next_message().unwrap().is_none());
        frames.buf.extend_from_slice(&twice[10..]);
        for _ in 0..2 {
            let m = frames.next_message().unwrap().unwrap();
            assert_eq!(
                <SendMessageResponse as prost::Message>::decode(m).unwrap(),
                response()
            );
        }
        assert!(frames.next_message().unwrap().is_none());
    }

    #[test]
    fn given_a_compressed_frame_when_read_should_refuse_it() {
        let mut frames = Frames::default();
        frames.buf.extend_from_slice(&[1, 0, 0, 0, 0]);
        let e = frames.next_message().unwrap_err();
        assert!(e.message().contains("compressed"));
    }
}
