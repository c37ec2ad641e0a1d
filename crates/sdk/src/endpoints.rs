//! Endpoints: a set of addresses the server presents as one endpoint, keyed by its
//! `host:port[,host:port]` spelling.
//!
//! The bottom of the SDK's connection layers: sessions cache channels by the key, routes name
//! the endpoints serving each queue, telemetry streams and heartbeats go to them. Depends on
//! nothing in the crate.

use std::net::IpAddr;

use comet_proto::apache::rocketmq::v2 as pb;

/// A set of addresses the server presents as one endpoint (normally one `host:port`).
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// `host:port[,host:port]`: the channel cache key and what logs show.
    pub(crate) key: String,
    pub(crate) proto: pb::Endpoints,
}

impl Endpoints {
    /// Endpoints for one `host:port` access point.
    pub(crate) fn from_access_point(address: &str) -> Endpoints {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "80"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let scheme = match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => pb::AddressScheme::IPv4,
            Ok(IpAddr::V6(_)) => pb::AddressScheme::IPv6,
            Err(_) => pb::AddressScheme::DomainName,
        };
        Endpoints::from_proto(pb::Endpoints {
            scheme: scheme as i32,
            addresses: vec![pb::Address {
                host: host.to_owned(),
                port: port.parse().unwrap_or(80),
            }],
        })
    }

    /// Endpoints as a route or an assignment names them.
    pub(crate) fn from_proto(proto: pb::Endpoints) -> Endpoints {
        let key = proto
            .addresses
            .iter()
            .map(|a| host_port(&a.host, a.port))
            .collect::<Vec<_>>()
            .join(",");
        Endpoints { key, proto }
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_access_points_when_parsed_should_pick_the_address_scheme() {
        let v4 = Endpoints::from_access_point("127.0.0.1:8081");
        assert_eq!(v4.proto.scheme, pb::AddressScheme::IPv4 as i32);
        assert_eq!(v4.key, "127.0.0.1:8081");
        let v6 = Endpoints::from_access_point("[::1]:8081");
        assert_eq!(v6.proto.scheme, pb::AddressScheme::IPv6 as i32);
        assert_eq!(v6.key, "[::1]:8081");
        let dns = Endpoints::from_access_point("comet.local:9");
        assert_eq!(dns.proto.scheme, pb::AddressScheme::DomainName as i32);
        assert_eq!(dns.proto.addresses[0].port, 9);
    }
}
