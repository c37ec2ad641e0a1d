//! [`Gate`]: the verdicts of one server (proxy, broker or controller) over the users and ACLs
//! it currently knows, with its two caches.
//!
//! The users and policies form one immutable [`Directory`], swapped whole when the metadata
//! changes ([`Gate::replace`]). Both caches live inside the directory, so a change of users or
//! ACLs drops every cached signature and decision at once:
//!
//! - verified signatures, keyed by (access key, `x-mq-date-time`, signature): a client that
//!   sends the same date on many calls (Python, Node: one-second resolution; a telemetry
//!   stream) costs one HMAC per date;
//! - decisions, keyed by (user, resource, action, source address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::acl::{AclEntry, Action, Decision, Policies, Resource, UserType};
use crate::secret::SecretCipher;
use crate::signature::{Refusal, check_skew, parse_authorization, signature_matches};

/// Entries kept by each cache before it starts over.
const CACHE_CAPACITY: usize = 16_384;

/// A user as the servers hold it: the plaintext secret lives only in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// User name (the access key).
    pub name: String,
    /// Secret key (decrypted).
    pub secret: Vec<u8>,
    /// Super or normal.
    pub kind: UserType,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The settings of a gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateSettings {
    /// Verify and authorize requests; off: every request passes and headers are ignored.
    pub enabled: bool,
    /// Refuse dates further than this from the server clock; `None`: no check (the default,
    /// because the Python client writes local time labelled `Z`).
    pub max_clock_skew: Option<Duration>,
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off: everything is allowed.
    Anonymous,
    /// An authenticated user.
    User(Arc<str>),
}

impl Principal {
    /// The user name, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(u) => Some(u),
        }
    }
}

/// A refused authorization (FORBIDDEN, 40300): names the user, the action and the resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access denied: user {user} may not {action} {resource}")]
pub struct Forbidden {
    /// The user.
    pub user: String,
    /// The action.
    pub action: Action,
    /// The resource.
    pub resource: Resource,
}

type DecisionKey = (Arc<str>, Resource, Action, Option<IpAddr>);
type SignatureKey = (String, String, [u8; 20]);

/// Users, policies and the caches derived from them.
#[derive(Default)]
pub struct Directory {
    secrets: HashMap<String, (Arc<str>, Vec<u8>)>,
    policies: Policies,
    signatures: Mutex<HashMap<SignatureKey, Arc<str>>>,
    decisions: Mutex<HashMap<DecisionKey, Decision>>,
}

impl Directory {
    /// A directory over `users` and their ACL entries in `policies` (whose user types are
    /// taken from `users`).
    pub fn new(users: Vec<User>, mut policies: Policies) -> Self {
        policies.users = users.iter().map(|u| (u.name.clone(), u.kind)).collect();
        let secrets = users
            .into_iter()
            .map(|u| {
                let name: Arc<str> = Arc::from(u.name.as_str());
                (u.name, (name, u.secret))
            })
            .collect();
        Directory {
            secrets,
            policies,
            ..Directory::default()
        }
    }

    /// A directory from users and ACLs as stored (sealed secrets, text entries), opening
    /// each secret with `cipher`. A user whose secret does not open (no cipher, a key that is
    /// not configured) or whose type is unknown is left out, and so is an entry that does not
    /// parse; each is logged, none stops the others.
    pub fn from_stored<'a>(
        users: impl IntoIterator<Item = StoredUser<'a>>,
        acls: impl IntoIterator<Item = (&'a str, Vec<StoredEntry<'a>>)>,
        cipher: Option<&SecretCipher>,
    ) -> Self {
        let mut out = Vec::new();
        for u in users {
            let Ok(kind) = u.user_type.parse::<UserType>() else {
                tracing::warn!(
                    user = u.name,
                    user_type = u.user_type,
                    "unknown user type; user ignored"
                );
                continue;
            };
            let Some(cipher) = cipher else {
                tracing::warn!(
                    user = u.name,
                    "no cluster key configured: user ignored (set auth.cluster_key)"
                );
                continue;
            };
            match cipher.open(u.name, u.sealed_secret) {
                Ok(secret) => out.push(User {
                    name: u.name.to_owned(),
                    secret,
                    kind,
                }),
                Err(e) => {
                    tracing::warn!(user = u.name, error = %e, "user secret does not open; user ignored")
                }
            }
        }
        let mut policies = Policies::default();
        for (subject, entries) in acls {
            let Ok(user) = crate::acl::subject_user(subject) else {
                tracing::warn!(subject, "ACL subject is not User:<name>; ignored");
                continue;
            };
            let list = policies.entries.entry(user.to_owned()).or_default();
            for e in entries {
                match AclEntry::parse(e.resource, e.actions, e.decision, e.source_ips) {
                    Ok(entry) => list.push(entry),
                    Err(err) => tracing::warn!(subject, error = %err, "ACL entry ignored"),
                }
            }
        }
        Directory::new(out, policies)
    }

    /// The users' names.
    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }
}

/// A user as the metadata stores it.
#[derive(Debug, Clone, Copy)]
pub struct StoredUser<'a> {
    /// Name.
    pub name: &'a str,
    /// Sealed secret (`v1:<key id>:<base64>`).
    pub sealed_secret: &'a str,
    /// `super` or `normal`.
    pub user_type: &'a str,
}

/// An ACL entry as the metadata stores it.
#[derive(Debug, Clone, Copy)]
pub struct StoredEntry<'a> {
    /// Resource pattern.
    pub resource: &'a str,
    /// Actions.
    pub actions: &'a str,
    /// Decision.
    pub decision: &'a str,
    /// Source CIDRs.
    pub source_ips: &'a [String],
}

/// Authentication and authorization of one server.
pub struct Gate {
    settings: GateSettings,
    directory: RwLock<Arc<Directory>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate with no users yet.
    pub fn new(settings: GateSettings) -> Self {
        Gate {
            settings,
            directory: RwLock::new(Arc::new(Directory::default())),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> GateSettings {
        self.settings
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Installs new users and policies; every cached signature and decision is dropped.
    pub fn replace(&self, directory: Directory) {
        *self.directory.write() = Arc::new(directory);
    }

    fn current(&self) -> Arc<Directory> {
        self.directory.read().clone()
    }

    /// Authenticates a request from its `authorization` and `x-mq-date-time` headers.
    /// With the gate off the headers are ignored (Python always sends an `authorization`,
    /// with an empty credential when it has none).
    ///
    /// # Errors
    /// The [`Refusal`] saying what was wrong.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        date: Option<&str>,
        now: SystemTime,
    ) -> Result<Principal, Refusal> {
        if !self.settings.enabled {
            return Ok(Principal::Anonymous);
        }
        let header = parse_authorization(authorization.ok_or(Refusal::MissingAuthorization)?)?;
        let date = date.ok_or(Refusal::MissingDate)?;
        check_skew(date, now, self.settings.max_clock_skew)?;
        let directory = self.current();
        let key = (
            header.access_key.to_owned(),
            date.to_owned(),
            header.signature,
        );
        if let Some(user) = directory.signatures.lock().get(&key) {
            return Ok(Principal::User(user.clone()));
        }
        let (name, secret) = directory
            .secrets
            .get(header.access_key)
            .ok_or_else(|| Refusal::UnknownAccessKey(header.access_key.to_owned()))?;
        if !signature_matches(secret, date, &header.signature) {
            return Err(Refusal::BadSignature(header.access_key.to_owned()));
        }
        let mut cache = directory.signatures.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, name.clone());
        Ok(Principal::User(name.clone()))
    }

    /// Whether `principal` may do `action` on `resource` from `source`.
    ///
    /// # Errors
    /// [`Forbidden`] naming the resource and the action.
    pub fn authorize(
        &self,
        principal: &Principal,
        resource: &Resource,
        action: Action,
        source: Option<IpAddr>,
    ) -> Result<(), Forbidden> {
        let user = match principal {
            Principal::Anonymous => return Ok(()),
            Principal::User(u) => u,
        };
        let directory = self.current();
        let key = (user.clone(), resource.clone(), action, source);
        let cached = directory.decisions.lock().get(&key).copied();
        let decision = match cached {
            Some(d) => d,
            None => {
                let d = directory.policies.decide(user, resource, action, source);
                let mut cache = directory.decisions.lock();
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, d);
                d
            }
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(Forbidden {
                user: user.to_string(),
                action,
                resource: resource.clone(),
            }),
        }
    }

    /// Like [`Gate::authorize`], allowed when any one of `actions` is.
    ///
    /// # Errors
    /// [`Forbidden`] naming the first action.
    pub fn authorize_any(
        &self,
        principal: &Principal,
        resource: &Resource,
        actions: &[Action],
        source: Option<IpAddr>,
    ) -> Result<(), Forbidden> {
        let mut first = None;
        for action in actions {
            match self.authorize(principal, resource, *action, source) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Cached decisions and signatures (for tests and metrics).
    pub fn cached(&self) -> (usize, usize) {
        let d = self.current();
        let signatures = d.signatures.lock().len();
        let decisions = d.decisions.lock().len();
        (signatures, decisions)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::signature::sign;

    const DATE: &str = "2026-11-21T00:40:54.536817941Z";

    fn gate(skew: Option<Duration>) -> Gate {
        let g = Gate::new(GateSettings {
            enabled: true,
            max_clock_skew: skew,
        });
        let mut policies = Policies::default();
        policies.entries.insert(
            "alice".into(),
            vec![AclEntry {
                resource: "Topic:orders".parse().unwrap(),
                actions: "Pub".parse().unwrap(),
                decision: Decision::Allow,
                source_ips: vec![],
            }],
        );
        g.replace(Directory::new(
            vec![
                User {
                    name: "alice".into(),
                    secret: b"alice-secret".to_vec(),
                    kind: UserType::Normal,
                },
                User {
                    name: "root".into(),
                    secret: b"root-secret".to_vec(),
                    kind: UserType::Super,
                },
            ],
            policies,
        ));
        g
    }

    fn header(ak: &str, secret: &[u8], date: &str, upper: bool) -> String {
        let mut sig = hex::encode(sign(secret, date));
        if upper {
            sig.make_ascii_uppercase();
        }
        format!("MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}")
    }

    fn now() -> SystemTime {
        crate::signature::parse_date_time(DATE).unwrap()
    }

    #[test]
    fn given_good_signatures_in_either_case_when_authenticating_should_name_the_user() {
        let g = gate(None);
        for upper in [false, true] {
            let h = header("alice", b"alice-secret", DATE, upper);
            let p = g
                .authenticate(Some(h.as_bytes()), Some(DATE), now())
                .unwrap();
            assert_eq!(p.user(), Some("alice"));
        }
        assert_eq!(g.cached().0, 1, "one verified signature cached");
    }

    #[test]
    fn given_each_bad_request_when_authenticating_should_refuse_with_its_reason() {
        let g = gate(Some(Duration::from_secs(60)));
        let wrong = header("alice", b"guess", DATE, false);
        assert_eq!(
            g.authenticate(Some(wrong.as_bytes()), Some(DATE), now()),
            Err(Refusal::BadSignature("alice".into()))
        );
        let unknown = header("mallory", b"x", DATE, false);
        assert_eq!(
            g.authenticate(Some(unknown.as_bytes()), Some(DATE), now()),
            Err(Refusal::UnknownAccessKey("mallory".into()))
        );
        let good = header("alice", b"alice-secret", DATE, false);
        assert_eq!(
            g.authenticate(Some(good.as_bytes()), None, now()),
            Err(Refusal::MissingDate)
        );
        assert_eq!(
            g.authenticate(None, Some(DATE), now()),
            Err(Refusal::MissingAuthorization)
        );
        let later = now() + Duration::from_secs(3600);
        assert!(matches!(
            g.authenticate(Some(good.as_bytes()), Some(DATE), later),
            Err(Refusal::StaleDate { .. })
        ));
        assert!(matches!(
            g.authenticate(Some(b"MQv2-HMAC-SHA1 nonsense"), Some(DATE), now()),
            Err(Refusal::Malformed(_))
        ));
        // The signature of one date does not authenticate another.
        assert!(
            g.authenticate(Some(good.as_bytes()), Some("2026-11-21T00:40:55Z"), now())
                .is_err()
        );
    }

    #[test]
    fn given_auth_off_when_python_sends_an_empty_credential_should_pass() {
        let g = Gate::new(GateSettings::default());
        let python = "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00";
        let p = g
            .authenticate(Some(python.as_bytes()), Some(DATE), now())
            .unwrap();
        assert_eq!(p, Principal::Anonymous);
        assert!(
            g.authorize(&p, &Resource::cluster(), Action::Delete, None)
                .is_ok()
        );
    }

    #[test]
    fn given_a_policy_change_when_authorizing_should_drop_cached_decisions() {
        let g = gate(None);
        let alice = Principal::User("alice".into());
        let t = Resource::topic("orders");
        assert!(g.authorize(&alice, &t, Action::Pub, None).is_ok());
        let err = g.authorize(&alice, &t, Action::Sub, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: user alice may not Sub Topic:orders"
        );
        assert_eq!(g.cached().1, 2);
        assert!(
            g.authorize_any(&alice, &t, &[Action::Sub, Action::Pub], None)
                .is_ok()
        );
        g.replace(Directory::new(
            vec![User {
                name: "alice".into(),
                secret: b"alice-secret".to_vec(),
                kind: UserType::Normal,
            }],
            Policies::default(),
        ));
        assert_eq!(g.cached(), (0, 0));
        assert!(g.authorize(&alice, &t, Action::Pub, None).is_err());
        let root = Principal::User("root".into());
        assert!(
            g.authorize(&root, &t, Action::Pub, None).is_err(),
            "root was removed"
        );
    }

    #[test]
    fn given_stored_records_when_building_should_open_secrets_and_skip_what_does_not_open() {
        let cipher = SecretCipher::new(&[1; 32], &[]).unwrap();
        let other = SecretCipher::new(&[2; 32], &[]).unwrap();
        let good = cipher.seal("alice", b"alice-secret").unwrap();
        let foreign = other.seal("bob", b"bob-secret").unwrap();
        let ips = vec!["10.0.0.0/8".to_owned()];
        let users = [
            StoredUser {
                name: "alice",
                sealed_secret: &good,
                user_type: "normal",
            },
            StoredUser {
                name: "bob",
                sealed_secret: &foreign,
                user_type: "normal",
            },
        ];
        let entries = vec![
            StoredEntry {
                resource: "Topic:t",
                actions: "Pub",
                decision: "Allow",
                source_ips: &[],
            },
            StoredEntry {
                resource: "Queue:x",
                actions: "Pub",
                decision: "Allow",
                source_ips: &ips,
            },
        ];
        let dir = Directory::from_stored(users, [("User:alice", entries)], Some(&cipher));
        assert_eq!(dir.user_names().collect::<Vec<_>>(), vec!["alice"]);
        let g = Gate::new(GateSettings {
            enabled: true,
            max_clock_skew: None,
        });
        g.replace(dir);
        let h = header("alice", b"alice-secret", DATE, false);
        let p = g
            .authenticate(Some(h.as_bytes()), Some(DATE), now())
            .unwrap();
        assert!(
            g.authorize(&p, &Resource::topic("t"), Action::Pub, None)
                .is_ok()
        );
        // Without a cipher no user is known.
        let none = Directory::from_stored(users, [], None);
        assert_eq!(none.user_names().count(), 0);
    }
}
