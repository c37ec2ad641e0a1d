//! Comet's security rules, shared by the proxy, the broker, the controller and the CLI:
//!
//! - [`signature`]: the `authorization` header of the RocketMQ 5 clients
//!   (`MQv2-HMAC-SHA1 Credential=<ak>, SignedHeaders=x-mq-date-time, Signature=<hex>`) and its
//!   verification, with an optional clock-skew window;
//! - [`acl`]: the ACL 2.0 model of Apache RocketMQ (users of type super or normal; entries
//!   binding `User:<name>` to `Topic:`/`Group:`/`Cluster` patterns, actions, Allow/Deny and
//!   source CIDRs) and its evaluation: super users pass, deny wins, default deny;
//! - [`gate`]: [`Gate`], one server's authentication and authorization over the current
//!   users and ACLs, caching verified signatures and decisions until they change;
//! - [`secret`]: [`SecretCipher`], AES-256-GCM encryption of user secrets at rest under the
//!   cluster key (the Raft log and snapshots never hold a plaintext secret);
//! - [`tls`]: rustls server and client configurations, the disabled / permissive / enforcing
//!   modes, mutual TLS against a cluster CA, and certificate reload without dropping
//!   connections; [`InternalTls`], the acceptor and [`Connector`] of the internal links
//!   (one certificate per node, from the cluster CA, used as server and client).
//!
//! # Invariants
//!
//! - Parsing request headers never panics and never authorizes anything malformed (a
//!   proptest feeds arbitrary bytes).
//! - Signatures are compared in constant time; refusals name only what the client sent.
//! - Secrets never appear in `Debug` output or logs.
//!
//! Dependency rule: no workspace crate; speaks no protocol types (the adapters convert).
#![forbid(unsafe_code)]

pub mod acl;
mod error;
pub mod gate;
pub mod secret;
pub mod signature;
pub mod tls;

pub use acl::{
    AclEntry, Action, Actions, Cidr, Decision, Policies, Resource, ResourcePattern, ResourceType,
    UserType,
};
pub use error::{AuthError, Result};
pub use gate::{
    Directory, Forbidden, Gate, GateSettings, Principal, StoredEntry, StoredUser, User,
};
pub use secret::SecretCipher;
pub use signature::{AUTHORIZATION_HEADER, DATE_TIME_HEADER, Refusal};
pub use tls::{
    Acceptor, ClientFiles, ClientStream, Connector, InternalFiles, InternalTls, MaybeTls,
    ReloadingConfig, ServerFiles, TlsMode,
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests {
    use proptest::prelude::*;
    use std::time::SystemTime;

    use super::*;

    proptest! {
        /// Arbitrary header bytes never panic the parser and never authenticate.
        #[test]
        fn arbitrary_authorization_bytes_never_panic_nor_authorize(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            date in "[0-9TZ:.+-]{0,40}",
        ) {
            let _ = signature::parse_authorization(&bytes);
            let gate = Gate::new(GateSettings { enabled: true, max_clock_skew: Some(std::time::Duration::from_secs(60)) });
            gate.replace(Directory::new(
                vec![User { name: "alice".into(), secret: b"s".to_vec(), kind: UserType::Super }],
                Policies::default(),
            ));
            prop_assert!(gate.authenticate(Some(&bytes), Some(&date), SystemTime::now()).is_err());
            let _ = signature::parse_date_time(&date);
        }

        /// Well-shaped headers with arbitrary fields never authorize without the secret.
        #[test]
        fn shaped_headers_with_guessed_signatures_never_authorize(
            ak in "[a-z]{1,8}",
            sig in "[0-9a-fA-F]{40}",
            date in "20[0-9]{6}T[0-9]{6}Z",
        ) {
            let gate = Gate::new(GateSettings { enabled: true, max_clock_skew: None });
            gate.replace(Directory::new(
                vec![User { name: ak.clone(), secret: b"real-secret".to_vec(), kind: UserType::Super }],
                Policies::default(),
            ));
            let header = format!("MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}");
            let real = hex::encode(signature::sign(b"real-secret", &date));
            prop_assume!(!real.eq_ignore_ascii_case(&sig));
            prop_assert!(gate.authenticate(Some(header.as_bytes()), Some(&date), SystemTime::now()).is_err());
        }
    }
}
