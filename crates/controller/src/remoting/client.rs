//! [`RemotingClient`]: a minimal NameServer-protocol client, one request at a
//! time over one TCP connection. Used by the admin command that shows a
//! topic's NameServer route, by the benchmark and by tests; it is also a
//! compact reference for what a 4.x client sends.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, RemotingCommand, SerializeType};
use super::request_code as req;
use super::response_code as resp;
use super::route_data::{ClusterInfo, TopicRouteData, topic_list_from_json};
use crate::error::ControllerError;

/// How the client asks for routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestStyle {
    /// Header encoding of the requests.
    pub serialize_type: SerializeType,
    /// `version` sent (>= 401 asks for standard JSON).
    pub version: i32,
    /// Sends `acceptStandardJsonOnly=true` with route requests.
    pub accept_standard_json_only: bool,
}

impl Default for RequestStyle {
    /// JSON headers, version 401 (4.9.4), no explicit flag.
    fn default() -> Self {
        RequestStyle {
            serialize_type: SerializeType::Json,
            version: 401,
            accept_standard_json_only: false,
        }
    }
}

/// A reply that was not SUCCESS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Response code.
    pub code: i32,
    /// Its remark.
    pub remark: String,
}

/// One connection to a NameServer-compatible endpoint.
#[derive(Debug)]
pub struct RemotingClient {
    stream: TcpStream,
    buf: BytesMut,
    next_opaque: i32,
    timeout: Duration,
    addr: String,
}

fn io_err(addr: &str, what: &str, e: impl std::fmt::Display) -> ControllerError {
    ControllerError::Connection {
        addr: addr.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

impl RemotingClient {
    /// Connects to `addr` (`host:port`); every request then waits at most `timeout`.
    ///
    /// # Errors
    /// [`ControllerError::Connection`] when the connection cannot be opened in time.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<RemotingClient, ControllerError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io_err(addr, "connect", "timed out"))?
            .map_err(|e| io_err(addr, "connect", e))?;
        let _ = stream.set_nodelay(true);
        Ok(RemotingClient {
            stream,
            buf: BytesMut::with_capacity(4096),
            next_opaque: 1,
            timeout,
            addr: addr.to_owned(),
        })
    }

    /// Sends `request` (its `opaque` is replaced) and returns the reply with
    /// the same opaque; replies to other requests are skipped.
    ///
    /// # Errors
    /// I/O failures, a timeout, or a reply frame that does not decode.
    pub async fn call(
        &mut self,
        mut request: RemotingCommand,
    ) -> Result<RemotingCommand, ControllerError> {
        request.opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let mut out = BytesMut::new();
        codec::encode(&request, &mut out)?;
        let addr = self.addr.clone();
        let exchange = async {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| io_err(&addr, "write", e))?;
            loop {
                while let Some(frame) = codec::split_frame(&mut self.buf)? {
                    let reply = codec::decode_frame(frame)?;
                    if reply.is_response() && reply.opaque == request.opaque {
                        return Ok(reply);
                    }
                }
                let n = self
                    .stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| io_err(&addr, "read", e))?;
                if n == 0 {
                    return Err(io_err(&addr, "read", "connection closed"));
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| io_err(&self.addr, "reply", "timed out"))?
    }

    fn request(code: i32, style: RequestStyle) -> RemotingCommand {
        let mut r = RemotingCommand::request(code, style.serialize_type);
        r.version = style.version;
        r
    }

    fn body(reply: &RemotingCommand) -> Result<&str, ControllerError> {
        std::str::from_utf8(&reply.body).map_err(|_| ControllerError::Body {
            reason: "the reply body is not UTF-8".to_owned(),
        })
    }

    /// GET_ROUTEINFO_BY_TOPIC: the route, or the refusal (e.g. TOPIC_NOT_EXIST)
    /// with the raw body of a success for callers that check its form.
    ///
    /// # Errors
    /// Transport errors and bodies that are not route data.
    pub async fn topic_route(
        &mut self,
        topic: &str,
        style: RequestStyle,
    ) -> Result<Result<(TopicRouteData, String), Refused>, ControllerError> {
        let mut r = Self::request(req::GET_ROUTEINFO_BY_TOPIC, style);
        r.ext_fields.insert("topic".to_owned(), topic.to_owned());
        if style.accept_standard_json_only {
            r.ext_fields
                .insert("acceptStandardJsonOnly".to_owned(), "true".to_owned());
        }
        let reply = self.call(r).await?;
        if reply.code != resp::SUCCESS {
            return Ok(Err(refused(&reply)));
        }
        let body = Self::body(&reply)?.to_owned();
        Ok(Ok((TopicRouteData::from_json(&body)?, body)))
    }

    /// GET_BROKER_CLUSTER_INFO.
    ///
    /// # Errors
    /// Transport errors, a refusal, a body that is not cluster info.
    pub async fn cluster_info(
        &mut self,
        style: RequestStyle,
    ) -> Result<ClusterInfo, ControllerError> {
        let reply = self
            .call(Self::request(req::GET_BROKER_CLUSTER_INFO, style))
            .await?;
        expect_success(&reply)?;
        ClusterInfo::from_json(Self::body(&reply)?)
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    ///
    /// # Errors
    /// Transport errors, a refusal, a body that is not a topic list.
    pub async fn topic_list(
        &mut self,
        style: RequestStyle,
    ) -> Result<Vec<String>, ControllerError> {
        let reply = self
            .call(Self::request(
                req::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
                style,
            ))
            .await?;
        expect_success(&reply)?;
        topic_list_from_json(Self::body(&reply)?)
    }
}

fn refused(reply: &RemotingCommand) -> Refused {
    Refused {
        code: reply.code,
        remark: reply.remark.clone().unwrap_or_default(),
    }
}

fn expect_success(reply: &RemotingCommand) -> Result<(), ControllerError> {
    if reply.code == resp::SUCCESS {
        Ok(())
    } else {
        let r = refused(reply);
        Err(ControllerError::Body {
            reason: format!("refused with code {}: {}", r.code, r.remark),
        })
    }
}
