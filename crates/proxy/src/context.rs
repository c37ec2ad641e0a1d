//! What the proxy reads from request headers: client id, namespace, language, deadline, and
//! (filled in by `Inner::context`) who sent it.
//!
//! Headers are read leniently (§8 of grpc-compat.md): any client-id format, any language, either
//! protocol header, any date format; nothing here rejects a request except a missing client id
//! where one is required, which the RPC handlers decide.

use std::net::IpAddr;
use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::access::Identity;

/// Header carrying the client's identity (sessions are keyed by it).
pub(crate) const CLIENT_ID_HEADER: &str = "x-mq-client-id";
/// Header carrying the namespace when Resources omit it (Node).
pub(crate) const NAMESPACE_HEADER: &str = "x-mq-namespace";
/// Header carrying the client language ("RUST", "PYTHON", "HTTP" for Node, ...).
pub(crate) const LANGUAGE_HEADER: &str = "x-mq-language";
/// Standard gRPC deadline header.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// Per-request facts taken from the headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestContext {
    /// `x-mq-client-id`, when present and non-empty.
    pub(crate) client_id: Option<String>,
    /// `x-mq-namespace` (may be empty).
    pub(crate) namespace: String,
    /// `x-mq-language`, upper-cased (may be empty).
    pub(crate) language: String,
    /// The client's deadline from `grpc-timeout`, when sent.
    pub(crate) timeout: Option<Duration>,
    /// Whether the call carried a W3C `traceparent` header (its span joined that trace).
    pub(crate) traceparent: bool,
    /// Who sent the request (set by `Inner::context` when authentication is on).
    pub(crate) identity: Identity,
    /// The peer's address, for ACL source CIDRs.
    pub(crate) source: Option<IpAddr>,
}

impl RequestContext {
    pub(crate) fn from_metadata(md: &MetadataMap) -> Self {
        let text = |name: &str| {
            md.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        RequestContext {
            client_id: text(CLIENT_ID_HEADER).filter(|v| !v.is_empty()),
            namespace: text(NAMESPACE_HEADER).unwrap_or_default(),
            language: text(LANGUAGE_HEADER)
                .unwrap_or_default()
                .to_ascii_uppercase(),
            timeout: text(GRPC_TIMEOUT_HEADER).and_then(|v| parse_grpc_timeout(&v)),
            traceparent: md.contains_key("traceparent"),
            identity: Identity::Anonymous,
            source: None,
        }
    }

    /// The namespace of a Resource: its own when set, else the header's.
    pub(crate) fn namespace_of<'a>(&'a self, resource_namespace: &'a str) -> &'a str {
        if resource_namespace.is_empty() {
            &self.namespace
        } else {
            resource_namespace
        }
    }

    /// Time the proxy may spend before answering: the client's deadline minus the margin
    /// (see [`margin_for`]), capped at `fallback`; `fallback` without a deadline.
    pub(crate) fn budget(&self, margin: Duration, fallback: Duration) -> Duration {
        match self.timeout {
            Some(t) => t.saturating_sub(margin_for(t, margin)).min(fallback),
            None => fallback,
        }
    }
}

/// The part of a client deadline `t` kept free for the answer to travel back: `margin`, but at
/// most a quarter of `t` so that short deadlines still leave time to do the work.
pub(crate) fn margin_for(t: Duration, margin: Duration) -> Duration {
    margin.min(t / 4)
}

/// Parses a `grpc-timeout` value: at most 8 digits followed by a unit H, M, S, m, u or n.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse() {
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("2999m"),
            Some(Duration::from_millis(2999))
        );
        assert_eq!(
            parse_grpc_timeout("40000000u"),
            Some(Duration::from_secs(40))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "3", "3s", "-3S", "123456789S", "1.5S", "3 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn context_reads_headers_leniently() {
        let mut md = MetadataMap::new();
        md.insert("x-mq-client-id", "host@1#2".parse().unwrap());
        md.insert("x-mq-namespace", "ns1".parse().unwrap());
        md.insert("x-mq-language", "http".parse().unwrap());
        md.insert("grpc-timeout", "3000m".parse().unwrap());
        let ctx = RequestContext::from_metadata(&md);
        assert_eq!(ctx.client_id.as_deref(), Some("host@1#2"));
        assert_eq!(ctx.namespace_of(""), "ns1");
        assert_eq!(ctx.namespace_of("own"), "own");
        assert_eq!(ctx.language, "HTTP");
        assert_eq!(
            ctx.budget(Duration::from_millis(500), Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        let short = RequestContext {
            timeout: Some(Duration::from_millis(400)),
            ..RequestContext::default()
        };
        assert_eq!(
            short.budget(Duration::from_millis(500), Duration::from_secs(10)),
            Duration::from_millis(300)
        );
        let empty = RequestContext::from_metadata(&MetadataMap::new());
        assert_eq!(empty.client_id, None);
        assert_eq!(
            empty.budget(Duration::from_millis(500), Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
