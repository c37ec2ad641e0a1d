//! Command-line arguments (clap derive). One variant per subcommand; each command module takes
//! its own argument struct.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::admin::{
    AclCommand, AdminTarget, ClientCommand, ClusterCommand, GroupCommand, MessageCommand,
    OffsetCommand, OutputFormat, TopicCommand, UserCommand,
};
use crate::log_level::LogLevelCommand;
use crate::server::ServerArgs;
use crate::size::ByteSize;

/// The `comet` command line.
#[derive(Debug, Parser)]
#[command(
    name = "comet",
    version,
    about = "Comet: a RocketMQ 5-style messaging engine",
    long_about = "Comet: a RocketMQ 5-style messaging engine.\n\n\
        Results are printed on stdout (admin commands: aligned tables on a terminal, JSON \
        with --output json or when stdout is not a terminal); logs go to stderr.\n\n\
        Environment:\n  \
        RUST_LOG   log filter for stderr, e.g. `info` or `comet_store=debug` (default: warn)\n\n\
        Examples:\n  \
        comet store inspect --data-dir /var/lib/comet/store\n  \
        comet store verify --data-dir /var/lib/comet/store --segment-size 64MiB"
)]
pub struct Cli {
    /// How admin commands print their result: `table` (aligned text) or `json`. Default:
    /// tables on a terminal, JSON when stdout is not a terminal (pipes, scripts).
    #[arg(long, value_enum, global = true, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole node in one process: a single-node controller, a broker and the proxy
    /// (zero config: data in ./comet-data, proxy on 127.0.0.1:8081, admin on 127.0.0.1:9878,
    /// NameServer-compatible remoting on 127.0.0.1:9876).
    Standalone(ServerArgs),
    /// Run one controller (metadata, Raft) node, with its NameServer-compatible remoting port.
    Controller(ServerArgs),
    /// Run one storage broker; it registers with the controllers.
    Broker(ServerArgs),
    /// Run one stateless proxy (the public RocketMQ 5 gRPC endpoint).
    Proxy(ServerArgs),
    /// Topic admin commands (through the controller).
    Topic {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: TopicCommand,
    },
    /// Consumer group admin commands (through the controller).
    Group {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: GroupCommand,
    },
    /// Cluster admin commands (through the controller).
    Cluster {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: ClusterCommand,
    },
    /// Consumer offset admin commands (through the brokers): reset a group to a time, show
    /// its progress and backlog.
    Offset {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: OffsetCommand,
    },
    /// Stored message queries (through the brokers): by message id, by key, by queue offset.
    Message {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: MessageCommand,
    },
    /// Connected clients (through the controller): every producer and consumer of every
    /// proxy.
    Client {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: ClientCommand,
    },
    /// Storage admin commands for a stopped broker's data directory.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Change the log level of running processes (through their admin API).
    #[command(subcommand)]
    LogLevel(LogLevelCommand),
    /// User admin commands (through the controller): ACL 2.0 users, whose name and password
    /// are the access key and secret key of request signatures.
    User {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: UserCommand,
    },
    /// ACL admin commands (through the controller): which user may do what on which topics,
    /// groups or the cluster, from where.
    Acl {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        cmd: AclCommand,
    },
}

/// `comet store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Open a store and print its recovery report, offsets, segments and queues as JSON.
    #[command(
        long_about = "Open a store and print one JSON object: the recovery report, the \
        commitlog offsets (min, write, flushed, dispatched), the segment start offsets and every \
        consume queue with its min/max offset and backlog.\n\n\
        Opening runs crash recovery exactly as a broker start would: the commitlog tail after \
        the checkpoint is verified, a torn or corrupt tail is cut, consume queues are rebuilt \
        from the checkpoint and a new checkpoint is written. The broker must be stopped (the \
        directory is locked while open). Retention is disabled while the tool holds the store, \
        so it never deletes segments."
    )]
    Inspect(StoreArgs),
    /// Read and CRC-check every message of every consume queue; exit 1 if any is corrupt.
    #[command(
        long_about = "Open a store (running crash recovery, as a broker start would), \
        then read every message of every consume queue and verify its CRC32C. Prints one JSON \
        object: {data_dir, recovery, queues, messages, bytes, body_bytes, corrupt: [{topic, \
        queue_id, queue_offset, physical_offset, error}], ok}. A corrupt record does not stop \
        the scan.\n\n\
        Exit status: 0 when every message verified, 1 when any record is corrupt, 2 when the \
        store could not be checked at all (missing directory, wrong --segment-size, locked, \
        I/O error)."
    )]
    Verify(StoreArgs),
}

/// Where the store is and how its files are laid out.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store's data directory (holds commitlog/, consumequeue/, the checkpoint). It must
    /// already exist: these commands never create a store.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Commitlog segment size the store was created with, e.g. 1GiB, 64MiB, 65536. It must
    /// match the existing segment files, or the store refuses to open.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub segment_size: ByteSize,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn given_the_cli_definition_when_checked_should_be_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn given_group_create_when_broadcast_should_parse_and_from_start_should_need_it() {
        use clap::Parser as _;

        let cli = Cli::try_parse_from(["comet", "group", "create", "g", "--broadcast"])
            .expect("--broadcast parses");
        let Command::Group {
            cmd: GroupCommand::Create(spec),
            ..
        } = cli.command
        else {
            panic!("a group create command");
        };
        assert!(spec.broadcast && !spec.from_start && !spec.fifo);
        let cli = Cli::try_parse_from([
            "comet",
            "group",
            "create",
            "g",
            "--broadcast",
            "--from-start",
        ])
        .expect("--from-start with --broadcast parses");
        assert!(matches!(
            cli.command,
            Command::Group { cmd: GroupCommand::Create(s), .. } if s.broadcast && s.from_start
        ));
        assert!(
            Cli::try_parse_from(["comet", "group", "create", "g", "--from-start"]).is_err(),
            "--from-start alone is refused"
        );
    }

    #[test]
    fn given_user_create_with_admin_credentials_when_parsed_should_keep_both_passwords_apart() {
        use clap::Parser as _;

        let cli = Cli::try_parse_from([
            "comet",
            "user",
            "create",
            "bob",
            "--password",
            "bobs-secret",
            "--auth-username",
            "admin",
            "--auth-password",
            "admins-secret",
        ])
        .expect("user create with admin credentials parses");
        let Command::User {
            target,
            cmd: UserCommand::Create(spec),
        } = cli.command
        else {
            panic!("a user create command");
        };
        assert_eq!(spec.password, "bobs-secret");
        assert_eq!(target.username.as_deref(), Some("admin"));
        assert_eq!(target.password.as_deref(), Some("admins-secret"));
    }
}
