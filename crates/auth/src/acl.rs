//! The ACL 2.0 model of Apache RocketMQ: users, and ACL entries binding a subject
//! (`User:<name>`) to a resource pattern, actions, a decision and optional source CIDRs.
//!
//! Evaluation ([`Policies::decide`]): a super user is allowed everything; otherwise the
//! entries of the user's subject that match the resource, the action and the source are
//! collected; any `Deny` among them refuses, else any `Allow` allows, else the request is
//! refused (default deny).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::AuthError;

/// The kind of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster itself (admin operations on brokers, users, ACLs).
    Cluster,
}

impl ResourceType {
    /// The name used in `Topic:<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
            ResourceType::Cluster => "Cluster",
        }
    }
}

/// A concrete resource named by a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceType,
    /// Its (qualified) name; empty for the cluster.
    pub name: String,
}

impl Resource {
    /// `Topic:<name>`.
    pub fn topic(name: impl Into<String>) -> Self {
        Resource {
            kind: ResourceType::Topic,
            name: name.into(),
        }
    }

    /// `Group:<name>`.
    pub fn group(name: impl Into<String>) -> Self {
        Resource {
            kind: ResourceType::Group,
            name: name.into(),
        }
    }

    /// `Cluster`.
    pub fn cluster() -> Self {
        Resource {
            kind: ResourceType::Cluster,
            name: String::new(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ResourceType::Cluster => f.write_str("Cluster"),
            kind => write!(f, "{}:{}", kind.as_str(), self.name),
        }
    }
}

/// How a pattern matches names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// Exactly this name.
    Exact(String),
    /// Names starting with this text (`orders-*`).
    Prefix(String),
    /// Every name (`*`).
    Any,
}

/// A resource pattern: `Topic:orders`, `Topic:orders-*`, `Group:*`, `Cluster`, or `*`
/// (every resource of every kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePattern {
    /// The kind, or `None` for `*`.
    pub kind: Option<ResourceType>,
    /// The names it covers.
    pub name: NamePattern,
}

impl ResourcePattern {
    /// Whether `resource` is covered.
    pub fn matches(&self, resource: &Resource) -> bool {
        if self.kind.is_some_and(|k| k != resource.kind) {
            return false;
        }
        match &self.name {
            NamePattern::Any => true,
            NamePattern::Exact(n) => *n == resource.name,
            NamePattern::Prefix(p) => resource.name.starts_with(p.as_str()),
        }
    }
}

impl FromStr for ResourcePattern {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        let s = s.trim();
        if s == "*" {
            return Ok(ResourcePattern {
                kind: None,
                name: NamePattern::Any,
            });
        }
        if s.eq_ignore_ascii_case("Cluster") || s.eq_ignore_ascii_case("Cluster:*") {
            return Ok(ResourcePattern {
                kind: Some(ResourceType::Cluster),
                name: NamePattern::Any,
            });
        }
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            AuthError::Invalid(format!(
                "resource {s:?}: expected Topic:<name>, Group:<name>, Cluster or * \
                 (a name may end with * for a prefix, or be * for all)"
            ))
        })?;
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "topic" => ResourceType::Topic,
            "group" => ResourceType::Group,
            _ => {
                return Err(AuthError::Invalid(format!(
                    "resource {s:?}: the type must be Topic, Group or Cluster"
                )));
            }
        };
        let name = name.trim();
        let name = if name == "*" {
            NamePattern::Any
        } else if let Some(prefix) = name.strip_suffix('*') {
            check_name(s, prefix)?;
            NamePattern::Prefix(prefix.to_owned())
        } else {
            check_name(s, name)?;
            NamePattern::Exact(name.to_owned())
        };
        Ok(ResourcePattern {
            kind: Some(kind),
            name,
        })
    }
}

fn check_name(pattern: &str, name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.contains('*') || name.chars().any(char::is_whitespace) {
        return Err(AuthError::Invalid(format!(
            "resource {pattern:?}: the name must be non-empty, without spaces, with * only at its end"
        )));
    }
    Ok(())
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.name) {
            (None, _) => f.write_str("*"),
            (Some(ResourceType::Cluster), _) => f.write_str("Cluster"),
            (Some(k), NamePattern::Any) => write!(f, "{}:*", k.as_str()),
            (Some(k), NamePattern::Exact(n)) => write!(f, "{}:{n}", k.as_str()),
            (Some(k), NamePattern::Prefix(p)) => write!(f, "{}:{p}*", k.as_str()),
        }
    }
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Send messages.
    Pub,
    /// Receive messages, commit offsets.
    Sub,
    /// Create a resource.
    Create,
    /// Change a resource.
    Update,
    /// Delete a resource.
    Delete,
    /// Read one resource's description.
    Get,
    /// List resources.
    List,
}

impl Action {
    /// Every action, in bit order.
    pub const ALL: [Action; 7] = [
        Action::Pub,
        Action::Sub,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Get,
        Action::List,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The name used in `--actions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pub => "Pub",
            Action::Sub => "Sub",
            Action::Create => "Create",
            Action::Update => "Update",
            Action::Delete => "Delete",
            Action::Get => "Get",
            Action::List => "List",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions; `All` is every action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Actions(u8);

impl Actions {
    /// Every action.
    pub const ALL: Actions = Actions(0x7f);

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The set's bits (stored in the metadata).
    pub fn bits(self) -> u32 {
        u32::from(self.0)
    }

    /// A set from stored bits (unknown bits are dropped).
    pub fn from_bits(bits: u32) -> Self {
        Actions((bits & 0x7f) as u8)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        Actions(iter.into_iter().fold(0, |acc, a| acc | a.bit()))
    }
}

impl FromStr for Actions {
    type Err = AuthError;

    /// `Pub,Sub`, `All`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, AuthError> {
        let mut set = Actions::default();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word.eq_ignore_ascii_case("All") || word == "*" {
                set = Actions::ALL;
                continue;
            }
            let action = Action::ALL
                .into_iter()
                .find(|a| a.as_str().eq_ignore_ascii_case(word))
                .ok_or_else(|| {
                    AuthError::Invalid(format!(
                        "action {word:?}: expected Pub, Sub, Create, Update, Delete, Get, List or All"
                    ))
                })?;
            set.0 |= action.bit();
        }
        if set.is_empty() {
            return Err(AuthError::Invalid(
                "actions: name at least one (Pub, Sub, Create, Update, Delete, Get, List or All)"
                    .to_owned(),
            ));
        }
        Ok(set)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Actions::ALL {
            return f.write_str("All");
        }
        let names: Vec<&str> = Action::ALL
            .into_iter()
            .filter(|a| self.contains(*a))
            .map(Action::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// Allow.
    Allow,
    /// Deny (wins over any allow).
    Deny,
}

impl FromStr for Decision {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => Err(AuthError::Invalid(format!(
                "decision {s:?}: expected Allow or Deny"
            ))),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "Allow",
            Decision::Deny => "Deny",
        })
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1/128`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        let bad = || {
            AuthError::Invalid(format!(
                "source ip {s:?}: expected an address or a CIDR such as 10.0.0.0/8 or fd00::/8"
            ))
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One ACL entry of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclEntry {
    /// What it covers.
    pub resource: ResourcePattern,
    /// The actions it decides.
    pub actions: Actions,
    /// Allow or deny.
    pub decision: Decision,
    /// Sources it applies to; empty: every source.
    pub source_ips: Vec<Cidr>,
}

impl AclEntry {
    /// An entry from its text fields (as the CLI and the metadata carry them).
    ///
    /// # Errors
    /// [`AuthError::Invalid`] naming the first bad field.
    pub fn parse(
        resource: &str,
        actions: &str,
        decision: &str,
        source_ips: &[String],
    ) -> Result<AclEntry, AuthError> {
        Ok(AclEntry {
            resource: resource.parse()?,
            actions: actions.parse()?,
            decision: decision.parse()?,
            source_ips: source_ips
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
        })
    }

    fn applies(&self, resource: &Resource, action: Action, source: Option<IpAddr>) -> bool {
        self.actions.contains(action)
            && self.resource.matches(resource)
            && (self.source_ips.is_empty()
                || source.is_some_and(|ip| self.source_ips.iter().any(|c| c.contains(ip))))
    }
}

/// A subject: `User:<name>`.
pub fn subject_user(subject: &str) -> Result<&str, AuthError> {
    match subject.trim().split_once(':') {
        Some((kind, name)) if kind.eq_ignore_ascii_case("User") && valid_username(name) => Ok(name),
        _ => Err(AuthError::Invalid(format!(
            "subject {subject:?}: expected User:<name> with a valid user name"
        ))),
    }
}

/// User names (access keys): 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Kind of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserType {
    /// Allowed everything; ACLs are not consulted.
    Super,
    /// Allowed what its ACL entries allow.
    Normal,
}

impl FromStr for UserType {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "super" => Ok(UserType::Super),
            "normal" => Ok(UserType::Normal),
            _ => Err(AuthError::Invalid(format!(
                "user type {s:?}: expected super or normal"
            ))),
        }
    }
}

impl fmt::Display for UserType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserType::Super => "super",
            UserType::Normal => "normal",
        })
    }
}

/// Every subject's entries and the users' types: what [`Policies::decide`] reads.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// User types by name; a user missing here is refused everything.
    pub users: BTreeMap<String, UserType>,
    /// Entries by user name.
    pub entries: BTreeMap<String, Vec<AclEntry>>,
}

impl Policies {
    /// The decision for `user` doing `action` on `resource` from `source`.
    pub fn decide(
        &self,
        user: &str,
        resource: &Resource,
        action: Action,
        source: Option<IpAddr>,
    ) -> Decision {
        match self.users.get(user) {
            Some(UserType::Super) => return Decision::Allow,
            Some(UserType::Normal) => {}
            None => return Decision::Deny,
        }
        let mut allowed = false;
        for entry in self.entries.get(user).into_iter().flatten() {
            if entry.applies(resource, action, source) {
                match entry.decision {
                    Decision::Deny => return Decision::Deny,
                    Decision::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(resource: &str, actions: &str, decision: &str, ips: &[&str]) -> AclEntry {
        AclEntry {
            resource: resource.parse().unwrap(),
            actions: actions.parse().unwrap(),
            decision: decision.parse().unwrap(),
            source_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn policies(user: &str, kind: UserType, entries: Vec<AclEntry>) -> Policies {
        let mut p = Policies::default();
        p.users.insert(user.to_owned(), kind);
        p.entries.insert(user.to_owned(), entries);
        p
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn given_an_allow_entry_when_the_action_matches_should_allow_only_that() {
        let p = policies(
            "u",
            UserType::Normal,
            vec![entry("Topic:orders", "Pub", "Allow", &[])],
        );
        let t = Resource::topic("orders");
        assert_eq!(p.decide("u", &t, Action::Pub, LOCAL), Decision::Allow);
        assert_eq!(p.decide("u", &t, Action::Sub, LOCAL), Decision::Deny);
        assert_eq!(
            p.decide("u", &Resource::topic("orders2"), Action::Pub, LOCAL),
            Decision::Deny
        );
        assert_eq!(
            p.decide("u", &Resource::group("orders"), Action::Pub, LOCAL),
            Decision::Deny
        );
    }

    #[test]
    fn given_allow_and_deny_when_both_match_should_deny() {
        let p = policies(
            "u",
            UserType::Normal,
            vec![
                entry("Topic:*", "All", "Allow", &[]),
                entry("Topic:secret-*", "Sub", "Deny", &[]),
            ],
        );
        assert_eq!(
            p.decide("u", &Resource::topic("secret-x"), Action::Sub, LOCAL),
            Decision::Deny
        );
        assert_eq!(
            p.decide("u", &Resource::topic("secret-x"), Action::Pub, LOCAL),
            Decision::Allow
        );
        assert_eq!(
            p.decide("u", &Resource::topic("public"), Action::Sub, LOCAL),
            Decision::Allow
        );
    }

    #[test]
    fn given_prefix_and_star_patterns_when_matching_should_cover_their_names() {
        let p = policies(
            "u",
            UserType::Normal,
            vec![
                entry("Topic:orders-*", "Pub", "Allow", &[]),
                entry("Group:*", "Sub", "Allow", &[]),
            ],
        );
        assert_eq!(
            p.decide("u", &Resource::topic("orders-eu"), Action::Pub, LOCAL),
            Decision::Allow
        );
        assert_eq!(
            p.decide("u", &Resource::topic("orders"), Action::Pub, LOCAL),
            Decision::Deny
        );
        assert_eq!(
            p.decide("u", &Resource::group("any"), Action::Sub, LOCAL),
            Decision::Allow
        );
        let any = policies("u", UserType::Normal, vec![entry("*", "Get", "Allow", &[])]);
        assert_eq!(
            any.decide("u", &Resource::cluster(), Action::Get, LOCAL),
            Decision::Allow
        );
        assert_eq!(
            any.decide("u", &Resource::group("g"), Action::Get, LOCAL),
            Decision::Allow
        );
    }

    #[test]
    fn given_source_cidrs_when_the_source_is_outside_should_not_apply() {
        let p = policies(
            "u",
            UserType::Normal,
            vec![entry("Topic:t", "Pub", "Allow", &["10.0.0.0/8", "::1"])],
        );
        let t = Resource::topic("t");
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            p.decide("u", &t, Action::Pub, ip("10.1.2.3")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("u", &t, Action::Pub, ip("::ffff:10.9.9.9")),
            Decision::Allow
        );
        assert_eq!(p.decide("u", &t, Action::Pub, ip("::1")), Decision::Allow);
        assert_eq!(
            p.decide("u", &t, Action::Pub, ip("11.0.0.1")),
            Decision::Deny
        );
        assert_eq!(p.decide("u", &t, Action::Pub, None), Decision::Deny);
    }

    #[test]
    fn given_no_entry_or_no_user_when_deciding_should_deny_by_default() {
        let p = policies("u", UserType::Normal, vec![]);
        assert_eq!(
            p.decide("u", &Resource::topic("t"), Action::Pub, LOCAL),
            Decision::Deny
        );
        assert_eq!(
            p.decide("ghost", &Resource::topic("t"), Action::Pub, LOCAL),
            Decision::Deny
        );
    }

    #[test]
    fn given_a_super_user_when_deciding_should_allow_everything() {
        let p = policies(
            "root",
            UserType::Super,
            vec![entry("*", "All", "Deny", &[])],
        );
        for action in Action::ALL {
            assert_eq!(
                p.decide("root", &Resource::cluster(), action, None),
                Decision::Allow
            );
        }
    }

    #[test]
    fn given_pattern_texts_when_parsing_should_round_trip_or_explain() {
        for s in ["Topic:a", "Topic:a-*", "Group:*", "Cluster", "*"] {
            assert_eq!(s.parse::<ResourcePattern>().unwrap().to_string(), s);
        }
        for bad in ["Queue:a", "Topic:", "Topic:a*b", "orders"] {
            assert!(bad.parse::<ResourcePattern>().is_err(), "{bad}");
        }
        assert_eq!(
            "pub, SUB".parse::<Actions>().unwrap().to_string(),
            "Pub,Sub"
        );
        assert_eq!("All".parse::<Actions>().unwrap(), Actions::ALL);
        assert!("Read".parse::<Actions>().is_err());
        assert!("".parse::<Actions>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!(
            "10.1.0.0/16".parse::<Cidr>().unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(subject_user("User:alice").unwrap(), "alice");
        assert!(subject_user("Group:alice").is_err());
        assert!(subject_user("User:a b").is_err());
    }
}
