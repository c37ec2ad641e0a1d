//! The producers' SendMessage calls, made on `h2` directly.
//!
//! A call through tonic and hyper's client costs the bench more than the call's HTTP/2 work:
//! hyper spawns a task per request to wait for its response, and tonic wraps the body in an
//! encoding stream and the response in a decoding one. The bench shares its machine with the
//! server it measures, so every microsecond it spends per message is taken from the server.
//! A [`Unary`] call sends the same bytes an official client sends (the gRPC headers, the
//! `x-mq-*` metadata, one length-prefixed protobuf message) from the calling task, and reads
//! the answer there too.
//!
//! Invariants: a call never outlives its deadline (on expiry its stream is reset); a response
//! is accepted only with HTTP status 200, `grpc-status` 0 and exactly one uncompressed
//! message; anything else is a [`tonic::Status`] like the one tonic would report.
//!
//! The gRPC framing of the request and of the answer is the SDK's ([`comet_sdk::wire`]): the
//! same two functions the SDK's own unary calls use, which add nothing to a call beyond the
//! encoding itself, so the raw path stays raw (no session, retry or route machinery).

use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use comet_sdk::wire::{decode_frame, encode_frame};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, TE};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use super::transport::{self, CONNECTION_WINDOW, STREAM_WINDOW};

/// One HTTP/2 connection for unary calls. Cheap to clone; clones share the connection, whose
/// task ends when the last clone is dropped or the peer closes.
#[derive(Debug, Clone)]
pub(crate) struct Unary {
    send: h2::client::SendRequest<Bytes>,
    authority: Authority,
}

/// Opens a connection to `authority` (`host:port`) within `timeout` (see
/// [`transport::dial`]), with the bench's fixed windows.
pub(crate) async fn open(authority: &str, timeout: Duration) -> anyhow::Result<Unary> {
    let parsed: Authority = authority
        .parse()
        .with_context(|| format!("{authority:?} is not a host:port"))?;
    let send = transport::dial(authority, timeout, |io| {
        h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
    })
    .await?;
    Ok(Unary {
        send,
        authority: parsed,
    })
}

/// The fixed part of a method's requests: its URI and the headers every call repeats.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    uri: Uri,
    headers: HeaderMap,
}

impl Method {
    /// Calls to `path` (`/package.Service/Method`) on `conn`, carrying `metadata` and a
    /// `grpc-timeout` of `timeout`.
    pub(crate) fn new(
        conn: &Unary,
        path: &'static str,
        metadata: HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(conn.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .context("building the request URI")?;
        let mut headers = metadata;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(
            HeaderName::from_static("grpc-timeout"),
            HeaderValue::try_from(format!("{}m", timeout.as_millis()))
                .context("grpc-timeout value")?,
        );
        Ok(Method { uri, headers })
    }
}

/// Sends `request` as a call of `method` on `conn`, with `extra` headers (those that change
/// per call), and decodes the answer, all within `deadline`.
pub(crate) async fn call<Q, R>(
    conn: &Unary,
    method: &Method,
    extra: &[(HeaderName, HeaderValue)],
    request: &Q,
    deadline: Duration,
) -> Result<R, tonic::Status>
where
    Q: prost::Message,
    R: prost::Message + Default,
{
    match tokio::time::timeout(deadline, exchange(conn, method, extra, request)).await {
        Ok(result) => result,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {deadline:?}"
        ))),
    }
}

async fn exchange<Q, R>(
    conn: &Unary,
    method: &Method,
    extra: &[(HeaderName, HeaderValue)],
    request: &Q,
) -> Result<R, tonic::Status>
where
    Q: prost::Message,
    R: prost::Message + Default,
{
    let mut head = http::Request::new(());
    *head.method_mut() = http::Method::POST;
    *head.uri_mut() = method.uri.clone();
    let headers = head.headers_mut();
    *headers = method.headers.clone();
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let body = encode_frame(request)?;

    let mut send = conn.send.clone().ready().await.map_err(transport)?;
    let (response, mut stream) = send.send_request(head, false).map_err(transport)?;
    stream.send_data(body, true).map_err(transport)?;
    let response = response.await.map_err(transport)?;

    let (parts, mut body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(tonic::Status::unknown(format!(
            "HTTP status {} from the server",
            parts.status
        )));
    }
    // A trailers-only answer (an error before any message) puts the status in the headers.
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        return Err(if status.code() == tonic::Code::Ok {
            tonic::Status::internal("the server answered without a message")
        } else {
            status
        });
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(transport)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(transport)?;
    match trailers.as_ref().and_then(tonic::Status::from_header_map) {
        Some(status) if status.code() == tonic::Code::Ok => {}
        Some(status) => return Err(status),
        None => return Err(tonic::Status::internal("the answer has no grpc-status")),
    }
    decode_frame(data.freeze())
}

/// A failure of the connection or stream, as tonic reports one.
fn transport(e: h2::Error) -> tonic::Status {
    let code = if e.is_io() || e.is_go_away() {
        tonic::Code::Unavailable
    } else if e.reason() == Some(h2::Reason::CANCEL) {
        tonic::Code::Cancelled
    } else {
        tonic::Code::Internal
    };
    tonic::Status::new(code, format!("HTTP/2: {e}"))
}
