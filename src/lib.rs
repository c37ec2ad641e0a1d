//! Generated protobuf and gRPC code for Comet: pure codegen, no I/O, no async
//! runtime, no hand-written logic.
//!
//! # Layout
//!
//! - `proto/apache/rocketmq/v2/*.proto`: the public RocketMQ 5 gRPC API
//!   (`definition.proto` domain types, `service.proto` with `MessagingService`,
//!   `admin.proto` with `Admin`), declared by Comet, wire-identical to
//!   apache/rocketmq-apis.
//! - `proto/comet/v1/*.proto`: Comet's internal API (`metadata.proto`,
//!   `controller.proto`, `controller_admin.proto`, `broker.proto`, `raft.proto`),
//!   free to evolve but kept
//!   backward-compatible between adjacent releases.
//! - `build.rs` compiles them with protox (no `protoc`) and generates Rust with
//!   tonic-prost-build; the output lives in `$OUT_DIR` and is included here.
//!
//! # Modules
//!
//! - [`apache::rocketmq::v2`]: prost messages and enums of the public API, plus
//!   - `messaging_service_client` / `admin_client` (feature `client`, default):
//!     tonic clients, used by the SDK and by tests;
//!   - `messaging_service_server` / `admin_server` (feature `server`, default):
//!     tonic service traits and servers, implemented by the proxy.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of every compiled file
//!   (imports such as `google/protobuf/duration.proto` included), ready for a
//!   gRPC reflection service.
//!
//! `Message.body` is generated as [`bytes::Bytes`] so that decoding a request
//! can share the receive buffer instead of copying the payload.
//!
//! # Wire-compatibility invariant
//!
//! The official RocketMQ 5 clients (Java, Rust, Python, Node, ...) must work
//! against Comet unmodified, so the `apache.rocketmq.v2` protos must match
//! upstream exactly: package, service and RPC names and streaming shapes,
//! message names, field names and numbers, labels (`optional`, `repeated`,
//! `map`, `oneof`) and enum values. Fields and values are never renumbered or
//! reused. The golden tests in this crate pin all of it; a failing golden test
//! means the wire contract changed, not that the table needs updating.

/// Generated code, one module per protobuf package.
pub mod apache {
    /// `apache.rocketmq.*` packages.
    pub mod rocketmq {
        /// The public RocketMQ 5 gRPC API (`apache.rocketmq.v2`).
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::unwrap_used,
            missing_docs,
            rust_2018_idioms
        )]
        pub mod v2 {
            tonic::include_proto!("apache.rocketmq.v2");
        }
    }
}

/// Comet's internal packages.
pub mod comet {
    /// Internal services and cluster metadata (`comet.v1`): `BrokerService`
    /// (proxy → broker), `ControllerService` (brokers, proxies and admin
    /// tools → controller) and the `ClusterMetadata` the controller holds.
    /// Resource names here are *qualified* (`<namespace>%<name>`).
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        clippy::unwrap_used,
        missing_docs,
        rust_2018_idioms
    )]
    pub mod v1 {
        tonic::include_proto!("comet.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `.proto` compiled by
/// `build.rs`, including imported well-known types and source info.
///
/// Register it with a reflection service, e.g. tonic-reflection's
/// `Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/comet_descriptor.bin"));

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod wire_tests;
