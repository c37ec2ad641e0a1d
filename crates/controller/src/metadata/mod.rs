//! The cluster metadata state machine, as pure data: [`MetadataState`] maps a
//! [`Command`] to a new state and a [`CommandResponse`], with no I/O.
//!
//! Invariants:
//! - [`MetadataState::apply`] is deterministic: the same state and command give
//!   the same result on every node and in every release that can read the log.
//!   It therefore checks only state-dependent rules (existence, registered
//!   broker sets, queue counts that would shrink); static input rules live in
//!   [`validation`] and run before a command is proposed.
//! - A rejected command changes nothing; its error is the entry's response.

pub mod records;
pub mod validation;

use std::collections::BTreeMap;

use comet_proto::comet::v1 as pb;
use serde::{Deserialize, Serialize};

use records::{
    AclEntryRecord, BrokerMemberRecord, BrokerSetRecord, GroupRecord, TopicRecord, UserRecord,
};

/// Why a metadata command was refused; each maps to one gRPC status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    /// Bad input (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The resource exists already (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The cluster is not in a state that allows it (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
}

impl From<MetadataError> for tonic::Status {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            MetadataError::AlreadyExists(m) => tonic::Status::already_exists(m),
            MetadataError::NotFound(m) => tonic::Status::not_found(m),
            MetadataError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
        }
    }
}

/// One liveness change decided by the leader's lease checker or heartbeat path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliveChange {
    /// Broker-set name.
    pub broker_set: String,
    /// Broker id.
    pub broker_id: u64,
    /// New liveness.
    pub alive: bool,
    /// The leader's wall clock (ms since the epoch) of the member's last heartbeat.
    pub last_heartbeat_ms: i64,
}

/// A change to the metadata: the application data of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a topic (validated record).
    CreateTopic {
        /// The new topic.
        topic: TopicRecord,
    },
    /// Replace an existing topic.
    UpdateTopic {
        /// The replacement.
        topic: TopicRecord,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Qualified name.
        name: String,
    },
    /// Create a group.
    CreateGroup {
        /// The new group.
        group: GroupRecord,
    },
    /// Replace an existing group.
    UpdateGroup {
        /// The replacement.
        group: GroupRecord,
    },
    /// Delete a group.
    DeleteGroup {
        /// Qualified name.
        name: String,
    },
    /// Add or update a broker-set member; marks it alive.
    RegisterBroker {
        /// Broker-set name (created on first registration).
        broker_set: String,
        /// Broker id.
        broker_id: u64,
        /// host:port of its BrokerService.
        address: String,
        /// Leader wall clock (ms since the epoch) at registration.
        now_ms: i64,
    },
    /// Liveness changes from leases; members that are gone are skipped.
    SetBrokersAlive {
        /// The changes.
        changes: Vec<AliveChange>,
    },
    /// Makes `master` the master of `broker_set` with the next epoch and a sync-state set of
    /// just itself (see [`crate::election`]); applies only while the set's epoch is still
    /// `expected_epoch`.
    ElectMaster {
        /// Broker-set name.
        broker_set: String,
        /// The master epoch the decision was made at.
        expected_epoch: u64,
        /// A registered member.
        master: u64,
    },
    /// The master replaces its set's sync-state set; applies only while `master` is the
    /// set's master at `master_epoch`.
    AlterSyncStateSet {
        /// Broker-set name.
        broker_set: String,
        /// The requesting master.
        master: u64,
        /// Its epoch.
        master_epoch: u64,
        /// The new set: the master and registered members, sorted, no duplicates.
        sync_state_set: Vec<u64>,
    },
    /// Create a user (secret already sealed).
    CreateUser {
        /// The new user.
        user: UserRecord,
    },
    /// Replace an existing user.
    UpdateUser {
        /// The replacement.
        user: UserRecord,
    },
    /// Delete a user and its ACL.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Create the configured first admin user, once in the cluster's life: applies only while
    /// no bootstrap has been applied, and never replaces an existing user.
    BootstrapUser {
        /// The admin user.
        user: UserRecord,
    },
    /// Add entries to a user's ACL; refused if the user has an entry for one of their resources.
    CreateAcl {
        /// User name of the subject.
        user: String,
        /// The new entries (resources unique).
        entries: Vec<AclEntryRecord>,
    },
    /// Replace entries of a user's ACL, matched by resource; each must exist.
    UpdateAcl {
        /// User name of the subject.
        user: String,
        /// The replacements (resources unique).
        entries: Vec<AclEntryRecord>,
    },
    /// Delete entries of a user's ACL by resource; no resources: the whole ACL.
    DeleteAcl {
        /// User name of the subject.
        user: String,
        /// Canonical resource patterns.
        resources: Vec<String>,
    },
}

/// The result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A blank or membership entry (no metadata change).
    Empty,
    /// The topic as stored.
    Topic(TopicRecord),
    /// The group as stored.
    Group(GroupRecord),
    /// The resource was deleted.
    Deleted,
    /// The broker set after the change.
    BrokerSet(BrokerSetRecord),
    /// How many members changed liveness.
    AliveUpdated {
        /// Count of members whose `alive` flag flipped.
        changed: u32,
    },
    /// The user as stored.
    User(UserRecord),
    /// A user's ACL after the change.
    Acl {
        /// User name.
        user: String,
        /// Its entries.
        entries: Vec<AclEntryRecord>,
    },
    /// The command was refused; nothing changed.
    Rejected(MetadataError),
}

/// Topics, groups and broker sets, keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataState {
    /// Topics by qualified name.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Groups by qualified name.
    pub groups: BTreeMap<String, GroupRecord>,
    /// Broker sets by name.
    pub broker_sets: BTreeMap<String, BrokerSetRecord>,
    /// Users by name (absent in snapshots of releases before users existed).
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
    /// ACL entries by user name.
    #[serde(default)]
    pub acls: BTreeMap<String, Vec<AclEntryRecord>>,
    /// Incremented at every change of users or ACLs.
    #[serde(default)]
    pub auth_version: u64,
    /// Whether the bootstrap admin user was applied (it never is again).
    #[serde(default)]
    pub auth_bootstrapped: bool,
}

impl MetadataState {
    fn check_placements(&self, topic: &TopicRecord) -> Result<(), MetadataError> {
        for p in &topic.placements {
            if !self.broker_sets.contains_key(&p.broker_set) {
                return Err(MetadataError::FailedPrecondition(format!(
                    "broker set {} is not registered (topic {:?}); start a broker of that set first",
                    p.broker_set, topic.name
                )));
            }
        }
        Ok(())
    }

    /// The state-dependent checks of `cmd`, without changing anything.
    pub fn check(&self, cmd: &Command) -> Result<(), MetadataError> {
        match cmd {
            Command::CreateTopic { topic } => {
                if self.topics.contains_key(&topic.name) {
                    return Err(MetadataError::AlreadyExists(format!(
                        "topic {:?} already exists",
                        topic.name
                    )));
                }
                self.check_placements(topic)
            }
            Command::UpdateTopic { topic } => {
                let Some(old) = self.topics.get(&topic.name) else {
                    return Err(MetadataError::NotFound(format!(
                        "topic {:?} does not exist",
                        topic.name
                    )));
                };
                self.check_placements(topic)?;
                for old_p in &old.placements {
                    let new_count = topic
                        .placements
                        .iter()
                        .find(|p| p.broker_set == old_p.broker_set)
                        .map_or(0, |p| p.queue_count);
                    if new_count < old_p.queue_count {
                        return Err(MetadataError::InvalidArgument(format!(
                            "topic {:?}: queues on broker set {} would shrink from {} to {}; queue counts may only grow (messages live in the existing queues)",
                            topic.name, old_p.broker_set, old_p.queue_count, new_count
                        )));
                    }
                }
                Ok(())
            }
            Command::DeleteTopic { name } => {
                if self.topics.contains_key(name) {
                    Ok(())
                } else {
                    Err(MetadataError::NotFound(format!(
                        "topic {name:?} does not exist"
                    )))
                }
            }
            Command::CreateGroup { group } => {
                if self.groups.contains_key(&group.name) {
                    Err(MetadataError::AlreadyExists(format!(
                        "group {:?} already exists",
                        group.name
                    )))
                } else {
                    Ok(())
                }
            }
            Command::UpdateGroup { group } => {
                if self.groups.contains_key(&group.name) {
                    Ok(())
                } else {
                    Err(MetadataError::NotFound(format!(
                        "group {:?} does not exist",
                        group.name
                    )))
                }
            }
            Command::DeleteGroup { name } => {
                if self.groups.contains_key(name) {
                    Ok(())
                } else {
                    Err(MetadataError::NotFound(format!(
                        "group {name:?} does not exist"
                    )))
                }
            }
            Command::RegisterBroker { .. } | Command::SetBrokersAlive { .. } => Ok(()),
            Command::ElectMaster {
                broker_set,
                expected_epoch,
                master,
            } => {
                let set = self.registered_set(broker_set)?;
                if set.master_epoch != *expected_epoch {
                    return Err(MetadataError::FailedPrecondition(format!(
                        "broker set {broker_set} is at master epoch {}, not {expected_epoch}; \
                         the election was decided on stale metadata",
                        set.master_epoch
                    )));
                }
                if !set.members.contains_key(master) {
                    return Err(MetadataError::FailedPrecondition(format!(
                        "broker {master} is not a member of broker set {broker_set}"
                    )));
                }
                Ok(())
            }
            Command::AlterSyncStateSet {
                broker_set,
                master,
                master_epoch,
                sync_state_set,
            } => {
                let set = self.registered_set(broker_set)?;
                if set.master_broker_id != *master || set.master_epoch != *master_epoch {
                    return Err(MetadataError::FailedPrecondition(format!(
                        "broker {master} at epoch {master_epoch} is not the master of broker \
                         set {broker_set} (its master is {} at epoch {})",
                        set.master_broker_id, set.master_epoch
                    )));
                }
                if !sync_state_set.contains(master) {
                    return Err(MetadataError::InvalidArgument(format!(
                        "the sync-state set of broker set {broker_set} must contain its master \
                         {master}"
                    )));
                }
                if let Some(id) = sync_state_set
                    .iter()
                    .find(|id| !set.members.contains_key(id))
                {
                    return Err(MetadataError::FailedPrecondition(format!(
                        "broker {id} is not a member of broker set {broker_set}"
                    )));
                }
                Ok(())
            }
            Command::CreateUser { user } => {
                if self.users.contains_key(&user.name) {
                    Err(MetadataError::AlreadyExists(format!(
                        "user {:?} already exists",
                        user.name
                    )))
                } else {
                    Ok(())
                }
            }
            Command::UpdateUser { user } => self.user_exists(&user.name),
            Command::DeleteUser { name } => self.user_exists(name),
            Command::BootstrapUser { .. } => Ok(()),
            Command::CreateAcl { user, entries } => {
                self.user_exists(user)?;
                let existing = self.acls.get(user);
                if let Some(e) = entries.iter().find(|e| {
                    existing.is_some_and(|list| list.iter().any(|x| x.resource == e.resource))
                }) {
                    return Err(MetadataError::AlreadyExists(format!(
                        "user {user} already has an ACL entry for {}; use `comet acl update`",
                        e.resource
                    )));
                }
                Ok(())
            }
            Command::UpdateAcl { user, entries } => {
                self.user_exists(user)?;
                self.entries_exist(user, entries.iter().map(|e| e.resource.as_str()))
            }
            Command::DeleteAcl { user, resources } => {
                if !self.acls.contains_key(user) {
                    return Err(MetadataError::NotFound(format!("user {user:?} has no ACL")));
                }
                self.entries_exist(user, resources.iter().map(String::as_str))
            }
        }
    }

    fn user_exists(&self, name: &str) -> Result<(), MetadataError> {
        if self.users.contains_key(name) {
            Ok(())
        } else {
            Err(MetadataError::NotFound(format!(
                "user {name:?} does not exist"
            )))
        }
    }

    fn entries_exist<'a>(
        &self,
        user: &str,
        mut resources: impl Iterator<Item = &'a str>,
    ) -> Result<(), MetadataError> {
        let list = self.acls.get(user).map(Vec::as_slice).unwrap_or_default();
        match resources.find(|r| !list.iter().any(|e| e.resource == *r)) {
            Some(r) => Err(MetadataError::NotFound(format!(
                "user {user} has no ACL entry for {r}"
            ))),
            None => Ok(()),
        }
    }

    fn registered_set(&self, name: &str) -> Result<&BrokerSetRecord, MetadataError> {
        self.broker_sets.get(name).ok_or_else(|| {
            MetadataError::FailedPrecondition(format!("broker set {name} is not registered"))
        })
    }

    /// Applies `cmd`; a refused command leaves the state unchanged.
    pub fn apply(&mut self, cmd: &Command) -> CommandResponse {
        if let Err(e) = self.check(cmd) {
            return CommandResponse::Rejected(e);
        }
        match cmd {
            Command::CreateTopic { topic } | Command::UpdateTopic { topic } => {
                self.topics.insert(topic.name.clone(), topic.clone());
                CommandResponse::Topic(topic.clone())
            }
            Command::DeleteTopic { name } => {
                self.topics.remove(name);
                CommandResponse::Deleted
            }
            Command::CreateGroup { group } | Command::UpdateGroup { group } => {
                self.groups.insert(group.name.clone(), group.clone());
                CommandResponse::Group(group.clone())
            }
            Command::DeleteGroup { name } => {
                self.groups.remove(name);
                CommandResponse::Deleted
            }
            Command::RegisterBroker {
                broker_set,
                broker_id,
                address,
                now_ms,
            } => {
                let set = self
                    .broker_sets
                    .entry(broker_set.clone())
                    .or_insert_with(|| BrokerSetRecord::new(broker_set.clone()));
                set.members.insert(
                    *broker_id,
                    BrokerMemberRecord {
                        broker_id: *broker_id,
                        address: address.clone(),
                        alive: true,
                        last_heartbeat_ms: *now_ms,
                    },
                );
                CommandResponse::BrokerSet(set.clone())
            }
            Command::SetBrokersAlive { changes } => {
                let mut changed = 0;
                for c in changes {
                    let member = self
                        .broker_sets
                        .get_mut(&c.broker_set)
                        .and_then(|s| s.members.get_mut(&c.broker_id));
                    if let Some(m) = member {
                        if m.alive != c.alive {
                            changed += 1;
                        }
                        m.alive = c.alive;
                        m.last_heartbeat_ms = m.last_heartbeat_ms.max(c.last_heartbeat_ms);
                    }
                }
                CommandResponse::AliveUpdated { changed }
            }
            Command::ElectMaster {
                broker_set, master, ..
            } => match self.broker_sets.get_mut(broker_set) {
                Some(set) => {
                    set.master_broker_id = *master;
                    set.master_epoch += 1;
                    set.sync_state_set = vec![*master];
                    CommandResponse::BrokerSet(set.clone())
                }
                None => CommandResponse::Rejected(MetadataError::FailedPrecondition(format!(
                    "broker set {broker_set} is not registered"
                ))),
            },
            Command::AlterSyncStateSet {
                broker_set,
                sync_state_set,
                ..
            } => match self.broker_sets.get_mut(broker_set) {
                Some(set) => {
                    let mut ids = sync_state_set.clone();
                    ids.sort_unstable();
                    ids.dedup();
                    set.sync_state_set = ids;
                    CommandResponse::BrokerSet(set.clone())
                }
                None => CommandResponse::Rejected(MetadataError::FailedPrecondition(format!(
                    "broker set {broker_set} is not registered"
                ))),
            },
            Command::CreateUser { user } | Command::UpdateUser { user } => {
                self.users.insert(user.name.clone(), user.clone());
                self.auth_version += 1;
                CommandResponse::User(user.clone())
            }
            Command::DeleteUser { name } => {
                self.users.remove(name);
                self.acls.remove(name);
                self.auth_version += 1;
                CommandResponse::Deleted
            }
            Command::BootstrapUser { user } => {
                if self.auth_bootstrapped {
                    return CommandResponse::Empty;
                }
                self.auth_bootstrapped = true;
                if self.users.contains_key(&user.name) {
                    return CommandResponse::Empty;
                }
                self.users.insert(user.name.clone(), user.clone());
                self.auth_version += 1;
                CommandResponse::User(user.clone())
            }
            Command::CreateAcl { user, entries } => {
                let list = self.acls.entry(user.clone()).or_default();
                list.extend(entries.iter().cloned());
                let entries = list.clone();
                self.auth_version += 1;
                CommandResponse::Acl {
                    user: user.clone(),
                    entries,
                }
            }
            Command::UpdateAcl { user, entries } => {
                let list = self.acls.entry(user.clone()).or_default();
                for new in entries {
                    if let Some(old) = list.iter_mut().find(|e| e.resource == new.resource) {
                        *old = new.clone();
                    }
                }
                let entries = list.clone();
                self.auth_version += 1;
                CommandResponse::Acl {
                    user: user.clone(),
                    entries,
                }
            }
            Command::DeleteAcl { user, resources } => {
                if resources.is_empty() {
                    self.acls.remove(user);
                } else if let Some(list) = self.acls.get_mut(user) {
                    list.retain(|e| !resources.contains(&e.resource));
                    if list.is_empty() {
                        self.acls.remove(user);
                    }
                }
                self.auth_version += 1;
                CommandResponse::Deleted
            }
        }
    }

    /// Looks up a member.
    pub fn member(&self, broker_set: &str, broker_id: u64) -> Option<&BrokerMemberRecord> {
        self.broker_sets
            .get(broker_set)
            .and_then(|s| s.members.get(&broker_id))
    }

    /// The protobuf snapshot of this state at `revision`.
    pub fn to_proto(&self, revision: u64, cluster_name: &str) -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            revision,
            cluster_name: cluster_name.to_owned(),
            topics: self.topics.values().map(Into::into).collect(),
            groups: self.groups.values().map(Into::into).collect(),
            broker_sets: self.broker_sets.values().map(Into::into).collect(),
            users: self.users.values().map(Into::into).collect(),
            acls: self
                .acls
                .iter()
                .map(|(user, entries)| records::acl_to_proto(user, entries))
                .collect(),
            auth_version: self.auth_version,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::records::PlacementRecord;
    use super::*;

    fn topic(name: &str, placements: &[(&str, u32)]) -> TopicRecord {
        TopicRecord {
            name: name.to_owned(),
            message_type: pb::TopicMessageType::Normal as i32,
            placements: placements
                .iter()
                .map(|(b, q)| PlacementRecord {
                    broker_set: (*b).to_owned(),
                    queue_count: *q,
                })
                .collect(),
            permission: 4,
            attributes: BTreeMap::new(),
        }
    }

    fn group(name: &str) -> GroupRecord {
        GroupRecord {
            name: name.to_owned(),
            max_retries: 16,
            retry_policy: None,
            fifo: false,
            priority_percent: None,
            broadcast: false,
            broadcast_from_start: false,
        }
    }

    fn register(set: &str, id: u64, addr: &str) -> Command {
        Command::RegisterBroker {
            broker_set: set.to_owned(),
            broker_id: id,
            address: addr.to_owned(),
            now_ms: 1000,
        }
    }

    fn state_with_brokers() -> MetadataState {
        let mut s = MetadataState::default();
        for set in ["a", "b"] {
            assert!(matches!(
                s.apply(&register(set, 0, "127.0.0.1:1")),
                CommandResponse::BrokerSet(_)
            ));
        }
        s
    }

    fn rejected(resp: CommandResponse) -> MetadataError {
        match resp {
            CommandResponse::Rejected(e) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn create_topic_on_unregistered_broker_set_is_a_failed_precondition() {
        let mut s = state_with_brokers();
        let e = rejected(s.apply(&Command::CreateTopic {
            topic: topic("t", &[("a", 4), ("zzz", 4)]),
        }));
        assert_eq!(
            e,
            MetadataError::FailedPrecondition(
                "broker set zzz is not registered (topic \"t\"); start a broker of that set first"
                    .to_owned()
            )
        );
        assert!(s.topics.is_empty(), "a rejected command changes nothing");
    }

    #[test]
    fn topic_lifecycle_table() {
        let mut s = state_with_brokers();
        type Expect = Result<(), fn(&MetadataError) -> bool>;
        let steps: Vec<(Command, Expect)> = vec![
            (
                Command::CreateTopic {
                    topic: topic("t", &[("a", 4)]),
                },
                Ok(()),
            ),
            (
                Command::CreateTopic {
                    topic: topic("t", &[("a", 8)]),
                },
                Err(|e| matches!(e, MetadataError::AlreadyExists(_))),
            ),
            (
                Command::UpdateTopic {
                    topic: topic("missing", &[("a", 4)]),
                },
                Err(|e| matches!(e, MetadataError::NotFound(_))),
            ),
            (
                Command::UpdateTopic {
                    topic: topic("t", &[("a", 3)]),
                },
                Err(|e| matches!(e, MetadataError::InvalidArgument(m) if m.contains("shrink"))),
            ),
            (
                Command::UpdateTopic {
                    topic: topic("t", &[("b", 4)]),
                },
                Err(
                    |e| matches!(e, MetadataError::InvalidArgument(m) if m.contains("from 4 to 0")),
                ),
            ),
            (
                Command::UpdateTopic {
                    topic: topic("t", &[("a", 8), ("b", 2)]),
                },
                Ok(()),
            ),
            (
                Command::DeleteTopic {
                    name: "t".to_owned(),
                },
                Ok(()),
            ),
            (
                Command::DeleteTopic {
                    name: "t".to_owned(),
                },
                Err(|e| matches!(e, MetadataError::NotFound(_))),
            ),
        ];
        for (i, (cmd, want)) in steps.into_iter().enumerate() {
            let before = s.clone();
            let got = s.apply(&cmd);
            match (got, want) {
                (CommandResponse::Rejected(e), Err(pred)) => {
                    assert!(pred(&e), "step {i}: unexpected error {e:?}");
                    assert_eq!(s, before, "step {i}: rejected commands change nothing");
                }
                (CommandResponse::Rejected(e), Ok(())) => panic!("step {i}: rejected: {e}"),
                (resp, Err(_)) => panic!("step {i}: expected rejection, got {resp:?}"),
                (_, Ok(())) => {}
            }
        }
        assert!(s.topics.is_empty());
    }

    #[test]
    fn group_lifecycle() {
        let mut s = MetadataState::default();
        assert!(matches!(
            s.apply(&Command::CreateGroup { group: group("g") }),
            CommandResponse::Group(_)
        ));
        assert!(matches!(
            rejected(s.apply(&Command::CreateGroup { group: group("g") })),
            MetadataError::AlreadyExists(_)
        ));
        let mut g = group("g");
        g.fifo = true;
        assert!(matches!(
            s.apply(&Command::UpdateGroup { group: g.clone() }),
            CommandResponse::Group(_)
        ));
        assert_eq!(s.groups["g"], g);
        assert!(matches!(
            rejected(s.apply(&Command::UpdateGroup { group: group("h") })),
            MetadataError::NotFound(_)
        ));
        assert!(matches!(
            s.apply(&Command::DeleteGroup {
                name: "g".to_owned()
            }),
            CommandResponse::Deleted
        ));
        assert!(matches!(
            rejected(s.apply(&Command::DeleteGroup {
                name: "g".to_owned()
            })),
            MetadataError::NotFound(_)
        ));
    }

    #[test]
    fn register_updates_address_and_liveness_changes_only_known_members() {
        let mut s = state_with_brokers();
        s.apply(&register("a", 0, "127.0.0.1:2"));
        assert_eq!(s.member("a", 0).unwrap().address, "127.0.0.1:2");
        let resp = s.apply(&Command::SetBrokersAlive {
            changes: vec![
                AliveChange {
                    broker_set: "a".to_owned(),
                    broker_id: 0,
                    alive: false,
                    last_heartbeat_ms: 5000,
                },
                AliveChange {
                    broker_set: "nope".to_owned(),
                    broker_id: 0,
                    alive: false,
                    last_heartbeat_ms: 5000,
                },
            ],
        });
        assert_eq!(resp, CommandResponse::AliveUpdated { changed: 1 });
        let m = s.member("a", 0).unwrap();
        assert!(!m.alive);
        assert_eq!(m.last_heartbeat_ms, 5000);
        s.apply(&register("a", 0, "127.0.0.1:2"));
        assert!(s.member("a", 0).unwrap().alive, "re-registration revives");
    }

    #[test]
    fn elections_and_sync_state_set_changes_are_fenced_by_epoch() {
        let mut s = state_with_brokers();
        s.apply(&register("a", 1, "127.0.0.1:3"));
        let elect = |expected_epoch, master| Command::ElectMaster {
            broker_set: "a".to_owned(),
            expected_epoch,
            master,
        };
        let alter = |master, master_epoch, sss: &[u64]| Command::AlterSyncStateSet {
            broker_set: "a".to_owned(),
            master,
            master_epoch,
            sync_state_set: sss.to_vec(),
        };
        match s.apply(&elect(0, 0)) {
            CommandResponse::BrokerSet(set) => {
                assert_eq!((set.master_broker_id, set.master_epoch), (0, 1));
                assert_eq!(set.sync_state_set, vec![0]);
            }
            other => panic!("{other:?}"),
        }
        // A second decision made on the same (now stale) metadata is refused.
        assert!(matches!(
            rejected(s.apply(&elect(0, 1))),
            MetadataError::FailedPrecondition(m) if m.contains("stale")
        ));
        assert!(matches!(
            rejected(s.apply(&elect(1, 9))),
            MetadataError::FailedPrecondition(m) if m.contains("not a member")
        ));
        match s.apply(&alter(0, 1, &[1, 0, 1])) {
            CommandResponse::BrokerSet(set) => assert_eq!(set.sync_state_set, vec![0, 1]),
            other => panic!("{other:?}"),
        }
        let before = s.clone();
        for (cmd, needle) in [
            (alter(1, 1, &[0, 1]), "not the master"),
            (alter(0, 2, &[0, 1]), "not the master"),
            (alter(0, 1, &[1]), "must contain its master"),
            (alter(0, 1, &[0, 7]), "not a member"),
        ] {
            let e = rejected(s.apply(&cmd));
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert_eq!(s, before, "refused changes change nothing");
        // The next election moves the epoch and resets the set to the new master.
        match s.apply(&elect(1, 1)) {
            CommandResponse::BrokerSet(set) => {
                assert_eq!((set.master_broker_id, set.master_epoch), (1, 2));
                assert_eq!(set.sync_state_set, vec![1]);
            }
            other => panic!("{other:?}"),
        }
        // The old master's epoch no longer alters anything.
        assert!(matches!(
            rejected(s.apply(&alter(0, 1, &[0, 1]))),
            MetadataError::FailedPrecondition(_)
        ));
    }

    #[test]
    fn proto_snapshot_is_sorted_and_carries_revision() {
        let mut s = state_with_brokers();
        s.apply(&Command::CreateTopic {
            topic: topic("z", &[("a", 1)]),
        });
        s.apply(&Command::CreateTopic {
            topic: topic("m", &[("b", 1)]),
        });
        let p = s.to_proto(42, "c");
        assert_eq!(p.revision, 42);
        assert_eq!(p.cluster_name, "c");
        let names: Vec<_> = p.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["m", "z"]);
        assert_eq!(p.broker_sets.len(), 2);
        assert_eq!(p.broker_sets[0].members[0].broker_set, "a");
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            sealed_secret: format!("v1:00000000:sealed-{name}"),
            user_type: "normal".into(),
        }
    }

    fn entry(resource: &str) -> AclEntryRecord {
        AclEntryRecord {
            resource: resource.into(),
            actions: "Pub".into(),
            decision: "Allow".into(),
            source_ips: vec![],
        }
    }

    #[test]
    fn given_users_and_acls_when_changed_should_follow_the_rules_and_bump_the_version() {
        let mut s = MetadataState::default();
        assert!(matches!(
            s.apply(&Command::CreateUser {
                user: user("alice")
            }),
            CommandResponse::User(_)
        ));
        assert!(matches!(
            rejected(s.apply(&Command::CreateUser {
                user: user("alice")
            })),
            MetadataError::AlreadyExists(_)
        ));
        let acl = |user: &str, resources: &[&str]| Command::CreateAcl {
            user: user.into(),
            entries: resources.iter().map(|r| entry(r)).collect(),
        };
        assert!(matches!(
            rejected(s.apply(&acl("ghost", &["Topic:a"]))),
            MetadataError::NotFound(_)
        ));
        assert!(matches!(
            s.apply(&acl("alice", &["Topic:a", "Group:g"])),
            CommandResponse::Acl { .. }
        ));
        assert!(matches!(
            rejected(s.apply(&acl("alice", &["Topic:a"]))),
            MetadataError::AlreadyExists(_)
        ));
        assert!(matches!(
            rejected(s.apply(&Command::UpdateAcl {
                user: "alice".into(),
                entries: vec![entry("Topic:b")],
            })),
            MetadataError::NotFound(_)
        ));
        let before = s.auth_version;
        assert!(matches!(
            s.apply(&Command::DeleteAcl {
                user: "alice".into(),
                resources: vec!["Topic:a".into()],
            }),
            CommandResponse::Deleted
        ));
        assert_eq!(s.acls["alice"].len(), 1);
        assert_eq!(s.auth_version, before + 1);
        let p = s.to_proto(9, "c");
        assert_eq!(p.users.len(), 1);
        assert_eq!(p.acls[0].subject, "User:alice");
        assert_eq!(p.auth_version, s.auth_version);
        // Deleting the user drops its ACL.
        s.apply(&Command::DeleteUser {
            name: "alice".into(),
        });
        assert!(s.users.is_empty() && s.acls.is_empty());
    }

    #[test]
    fn given_a_bootstrap_user_when_applied_twice_should_create_it_once_in_the_cluster_life() {
        let mut s = MetadataState::default();
        assert!(matches!(
            s.apply(&Command::BootstrapUser {
                user: user("admin")
            }),
            CommandResponse::User(_)
        ));
        s.apply(&Command::DeleteUser {
            name: "admin".into(),
        });
        assert!(matches!(
            s.apply(&Command::BootstrapUser {
                user: user("admin")
            }),
            CommandResponse::Empty
        ));
        assert!(
            s.users.is_empty(),
            "a deleted bootstrap user does not come back"
        );
        // Snapshots of older releases, without the auth fields, still load.
        let old: MetadataState =
            serde_json::from_str(r#"{"topics":{},"groups":{},"broker_sets":{}}"#).unwrap();
        assert_eq!(old.auth_version, 0);
        assert!(!old.auth_bootstrapped);
    }
}
