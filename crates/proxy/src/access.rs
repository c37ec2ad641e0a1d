//! Who may do what on the client port: request signatures and ACL decisions, over the users
//! and ACLs of the metadata watch (see `comet_auth`).
//!
//! - Authentication happens once per request, where the request context is read
//!   ([`Access::identify`]); a telemetry stream is authenticated at its open (its metadata is
//!   signed once).
//! - Authorization happens in one table, [`needs`] of each RPC in `service`, before the
//!   handler runs ([`Access::permit`]).
//! - Failures are in-body UNAUTHORIZED (40100) and FORBIDDEN (40300) statuses whose message
//!   says what was wrong.
//! - The gate is rebuilt only when the metadata's `auth_version` moves, which also drops the
//!   cached signatures and decisions.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use comet_auth::{
    Acceptor, Action, Directory, Gate, GateSettings, Principal, Resource, SecretCipher,
    StoredEntry, StoredUser,
};
use comet_proto::apache::rocketmq::v2::Code;
use comet_proto::comet::v1::ClusterMetadata;
use tonic::metadata::MetadataMap;

use crate::status::{Failure, Outcome};

/// The security settings of a proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxySecurity {
    /// Authentication and authorization (off by default).
    pub auth: GateSettings,
    /// The cluster key that opens the users' sealed secrets.
    pub cipher: Option<Arc<SecretCipher>>,
    /// TLS of the client port (`None`: plaintext).
    pub tls: Option<Acceptor>,
}

/// The result of authenticating a request.
#[derive(Debug, Clone, Default)]
pub(crate) enum Identity {
    /// Authentication is off.
    #[default]
    Anonymous,
    /// An authenticated user.
    User(Arc<str>),
    /// Authentication failed: the UNAUTHORIZED answer.
    Refused(Failure),
}

/// One permission an RPC needs: any of `actions` on `resource`.
pub(crate) struct Need {
    pub(crate) resource: Resource,
    pub(crate) actions: &'static [Action],
}

impl Need {
    pub(crate) fn topic(qualified: String, actions: &'static [Action]) -> Need {
        Need {
            resource: Resource::topic(qualified),
            actions,
        }
    }

    pub(crate) fn group(qualified: String, actions: &'static [Action]) -> Need {
        Need {
            resource: Resource::group(qualified),
            actions,
        }
    }
}

/// The proxy's gate over the current users and ACLs.
pub(crate) struct Access {
    gate: Gate,
    cipher: Option<Arc<SecretCipher>>,
    /// `auth_version` the gate was built from (`u64::MAX`: never built).
    version: AtomicU64,
}

impl Access {
    pub(crate) fn new(security: &ProxySecurity) -> Self {
        Access {
            gate: Gate::new(security.auth),
            cipher: security.cipher.clone(),
            version: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.gate.enabled()
    }

    /// Rebuilds the gate when the users or ACLs of `md` changed.
    fn refresh(&self, md: &ClusterMetadata) {
        if self.version.load(Ordering::Acquire) == md.auth_version {
            return;
        }
        self.gate.replace(directory(md, self.cipher.as_deref()));
        self.version.store(md.auth_version, Ordering::Release);
    }

    /// Authenticates a request by its headers (`authorization`, `x-mq-date-time`).
    pub(crate) fn identify(&self, headers: &MetadataMap, md: &ClusterMetadata) -> Identity {
        if !self.enabled() {
            return Identity::Anonymous;
        }
        self.refresh(md);
        let verdict = self.gate.authenticate(
            headers
                .get(comet_auth::AUTHORIZATION_HEADER)
                .map(|v| v.as_bytes()),
            headers
                .get(comet_auth::DATE_TIME_HEADER)
                .and_then(|v| v.to_str().ok()),
            SystemTime::now(),
        );
        match verdict {
            Ok(Principal::User(u)) => Identity::User(u),
            Ok(Principal::Anonymous) => Identity::Anonymous,
            Err(refusal) => {
                tracing::debug!(reason = %refusal, "request not authenticated");
                Identity::Refused(Failure::new(Code::Unauthorized, refusal.to_string()))
            }
        }
    }

    /// Whether `identity` holds every one of `needs` from `source`.
    pub(crate) fn permit(
        &self,
        identity: &Identity,
        source: Option<IpAddr>,
        needs: &[Need],
    ) -> Outcome<()> {
        let principal = match identity {
            Identity::Anonymous => return Ok(()),
            Identity::Refused(f) => return Err(f.clone()),
            Identity::User(u) => Principal::User(u.clone()),
        };
        for need in needs {
            self.gate
                .authorize_any(&principal, &need.resource, need.actions, source)
                .map_err(|f| Failure::new(Code::Forbidden, f.to_string()))?;
        }
        Ok(())
    }
}

/// The users and ACLs of `md` as a gate directory.
fn directory(md: &ClusterMetadata, cipher: Option<&SecretCipher>) -> Directory {
    Directory::from_stored(
        md.users.iter().map(|u| StoredUser {
            name: &u.name,
            sealed_secret: &u.sealed_secret,
            user_type: &u.user_type,
        }),
        md.acls.iter().map(|a| {
            (
                a.subject.as_str(),
                a.entries
                    .iter()
                    .map(|e| StoredEntry {
                        resource: &e.resource,
                        actions: &e.actions,
                        decision: &e.decision,
                        source_ips: &e.source_ips,
                    })
                    .collect(),
            )
        }),
        cipher,
    )
}
