//! A minimal HTTP/1.1 client for the tests of Comet's HTTP listeners (metrics, health and the
//! web console): one request per connection (`connection: close`), the body read to the end
//! and de-chunked. Plain text only; the servers under test are local.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound of one whole exchange (connect, write, read to the end).
const LIMIT: Duration = Duration::from_secs(30);

/// `method path` on `addr` with an optional JSON body: (status code, body). An error says what
/// failed (no listener, a timeout, no HTTP response), for callers that wait for a listener.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<(u16, String), String> {
    let (status, _, body) = exchange(addr, method, path, &[], json).await?;
    Ok((status, body))
}

/// Like [`request`], with extra request headers (name, value), e.g. a session cookie; returns
/// the response head (status line and headers) too: (status code, head, body).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> Result<(u16, String, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let payload = json.unwrap_or_default();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write to {addr}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(LIMIT, exchange)
        .await
        .map_err(|_| format!("{method} {path} on {addr}: no answer within {LIMIT:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path} on {addr}: not an HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path} on {addr}: no status code in {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// `GET path` on `addr`: (status code, body); panics when there is no HTTP answer.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The payload of a chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
