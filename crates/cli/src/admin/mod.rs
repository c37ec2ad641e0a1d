//! Admin commands over the controller's gRPC API: `comet topic ...`, `comet group ...`,
//! `comet cluster ...` (including the controllers' Raft membership: `members`, `add-member`,
//! `remove-member`); and over the brokers' internal API (addresses from the controller's
//! metadata): `comet offset reset|progress`, `comet message id|key|offset`. Each prints one
//! JSON object (the resulting resource) on stdout.
//!
//! Names given here are plain names plus an optional `--namespace`; the controller stores the
//! qualified name `<namespace>%<name>` (see `proto/comet/v1/metadata.proto`).
//!
//! # Layout
//! - `args`: the clap definitions of every admin subcommand.
//! - `parse`: names with their namespace, retry backoffs and times, as typed by an operator.
//! - `controller_api`: `comet topic|group|cluster ...` over the controller API, and the
//!   controller connection (cluster metadata) the broker-side commands share.
//! - `fanout`: the broker sets holding a topic, their masters' internal addresses, the
//!   connection to each and their in-body statuses.
//! - `broker_api`: `comet offset|message ...` over the brokers' internal API, fanned out.
//! - `client_api`: `comet client list` over the controller API.
//! - `render`: every printed resource as JSON (the output format).
//! - `signing`: the credentials admin calls are signed with (flags, env, config).
//! - `access_api`: `comet user|acl ...` (ACL 2.0 users and entries) over the controller.
//! - `table`: the output layer: a result as JSON or as aligned tables.
//!
//! Imports run one way: `args`, `parse`, `render` and `fanout` name no other admin module;
//! `table` names `args`; `controller_api` names those and `signing`, `access_api` names
//! `controller_api`, and `broker_api` and `client_api` name all but `access_api`.

mod access_api;
mod args;
mod broker_api;
mod client_api;
mod controller_api;
mod fanout;
mod parse;
mod render;
mod signing;
mod table;

pub use access_api::{acl, user};
pub use args::{
    AclCommand, AclDelete, AclFilter, AclSpec, AclSubject, AddMemberArgs, AdminTarget,
    ClientCommand, ClientListArgs, ClusterCommand, GroupCommand, GroupSpec, IdQuery, KeyQuerySpec,
    MessageCommand, NameArg, OffsetCommand, OffsetQuerySpec, OutputFormat, Perm, ProgressSpec,
    RemoveMemberArgs, ResetSpec, RouteArgs, TopicCommand, TopicSpec, TopicType, TopicUpdate,
    UserCommand, UserFilter, UserName, UserSpec, UserTypeArg, UserUpdate,
};
pub use broker_api::{message, offset};
pub use client_api::client_cmd;
pub use controller_api::{cluster, group, topic};
pub use parse::{parse_backoff, parse_time, qualify};
pub use render::{
    brokers_json, controllers_json, group_json, message_json, metadata_json, topic_json,
};
pub use signing::Signer;
pub use table::{format_output, print_output};
