//! Console logins. With `auth.enabled` a person logs in with the name and password of a Comet
//! user (checked against the sealed secret in the metadata, opened with the cluster key and
//! compared in constant time) and gets a session: a random 256-bit token in an `HttpOnly`,
//! `SameSite=Strict` cookie, valid for the session timeout. Every other `/api` call resolves
//! the cookie into a [`Caller`] (401 without a valid session) whose rights are the user's ACL,
//! checked like admin calls (403 naming the resource and the action). With auth off every
//! call is an anonymous caller allowed everything, and no cookie is needed.
//!
//! Invariants: the server keeps only a SHA-256 digest of each token (memory only, per node);
//! a session ends at its expiry, at logout, or as soon as its user is deleted or its password
//! changed (the sealed secret it logged in against is no longer the stored one); a name with
//! five failed logins within a minute is refused (429) for the rest of that minute. Passwords
//! and tokens never reach a log or an answer body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use comet_auth::{Action, Gate, Principal, Resource, SecretCipher};
use comet_proto::comet::v1::ClusterMetadata;
use parking_lot::Mutex;
use ring::rand::SecureRandom as _;

use super::Console;
use super::error::ApiError;

/// The session cookie's name.
pub(super) const COOKIE: &str = "comet_session";
/// Sessions kept at most per node; at the limit a new login ends the session closest to its
/// expiry.
const MAX_SESSIONS: usize = 10_000;
/// Failed logins of one user name after which its logins are refused for [`LOCKOUT`].
const MAX_FAILURES: u32 = 5;
/// How long a user name stays locked after [`MAX_FAILURES`] failed logins.
const LOCKOUT: Duration = Duration::from_secs(60);
/// User names whose failures are tracked at most (the table starts over beyond).
const MAX_TRACKED: usize = 10_000;

/// One logged-in user.
#[derive(Debug, Clone)]
struct Session {
    user: Arc<str>,
    /// The sealed secret the login was checked against.
    sealed: String,
    expires: Instant,
}

/// The node's login state: its gate (on/off, the users' ACLs), the cluster key, the sessions.
pub(super) struct Logins {
    gate: Arc<Gate>,
    cipher: Option<Arc<SecretCipher>>,
    timeout: Duration,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed logins per user name: (count, time of the first of them).
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    random: ring::rand::SystemRandom,
    /// A secret sealed at start under a name no user can have: an unknown user's login opens
    /// it, so that it costs what a known user's does (no user names probed by timing).
    decoy: Option<String>,
}

/// The name the decoy secret is sealed under (a NUL byte: not a valid user name).
const DECOY_NAME: &str = "\0decoy";

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal bytes, compared in time independent of where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// What a login answers with besides its body.
pub(super) struct Login {
    pub user: Arc<str>,
    pub user_type: String,
    pub token: String,
    pub expires_in: Duration,
}

impl Logins {
    pub(super) fn new(
        gate: Arc<Gate>,
        cipher: Option<Arc<SecretCipher>>,
        timeout: Duration,
    ) -> Self {
        let decoy = cipher
            .as_deref()
            .and_then(|c| c.seal(DECOY_NAME, b"decoy-secret-of-no-user").ok());
        Logins {
            decoy,
            gate,
            cipher,
            timeout,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            random: ring::rand::SystemRandom::new(),
        }
    }

    /// Whether logins are required (`auth.enabled`).
    pub(super) fn enabled(&self) -> bool {
        self.gate.enabled()
    }

    /// Checks `username` and `password` against the stored users and opens a session.
    ///
    /// # Errors
    /// 409 when auth is off; 401 (one message for an unknown user and a wrong password);
    /// 429 after [`MAX_FAILURES`] failures for the name within [`LOCKOUT`]; 503 without a
    /// cluster key.
    pub(super) fn login(
        &self,
        meta: &ClusterMetadata,
        username: &str,
        password: &str,
    ) -> Result<Login, ApiError> {
        if !self.enabled() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "authentication is off on this controller (auth.enabled = false): the console \
                 needs no login",
            ));
        }
        if username.is_empty() || password.is_empty() {
            return Err(ApiError::bad_request("give a user name and a password"));
        }
        let now = Instant::now();
        if let Some((count, first)) = self.failures.lock().get(username).copied()
            && count >= MAX_FAILURES
            && now.duration_since(first) < LOCKOUT
        {
            let wait = LOCKOUT.saturating_sub(now.duration_since(first)).as_secs() + 1;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins for {username:?}; try again in {wait} s"),
            ));
        }
        let result = self.check(meta, username, password);
        let mut failures = self.failures.lock();
        match &result {
            Ok(_) => {
                failures.remove(username);
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                if failures.len() >= MAX_TRACKED {
                    failures.retain(|_, (_, first)| now.duration_since(*first) < LOCKOUT);
                    if failures.len() >= MAX_TRACKED {
                        failures.clear();
                    }
                }
                let entry = failures.entry(username.to_owned()).or_insert((0, now));
                if now.duration_since(entry.1) >= LOCKOUT {
                    *entry = (0, now);
                }
                entry.0 += 1;
            }
            Err(_) => {}
        }
        result
    }

    /// The password check and the new session of [`Logins::login`].
    fn check(
        &self,
        meta: &ClusterMetadata,
        username: &str,
        password: &str,
    ) -> Result<Login, ApiError> {
        let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "unknown user or wrong password");
        let cipher = self.cipher.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no cluster key is configured on this controller (auth.cluster_key or \
                 auth.cluster_key_file), so no password can be checked",
            )
        })?;
        let Some(user) = meta.users.iter().find(|u| u.name == username) else {
            if let Some(decoy) = &self.decoy {
                let opened = cipher.open(DECOY_NAME, decoy).unwrap_or_default();
                let _ = same_bytes(&opened, password.as_bytes());
            }
            tracing::info!(user = %username, "console login refused: unknown user");
            return Err(refused());
        };
        let secret = cipher.open(&user.name, &user.sealed_secret).map_err(|e| {
            tracing::warn!(user = %user.name, error = %e, "console login: the stored secret does not open");
            refused()
        })?;
        if !same_bytes(&secret, password.as_bytes()) {
            tracing::info!(user = %user.name, "console login refused: wrong password");
            return Err(refused());
        }
        let mut raw = [0u8; 32];
        self.random.fill(&mut raw).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the system random generator failed; try again",
            )
        })?;
        let token = hex::encode(raw);
        let name: Arc<str> = Arc::from(user.name.as_str());
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&token),
            Session {
                user: name.clone(),
                sealed: user.sealed_secret.clone(),
                expires: now + self.timeout,
            },
        );
        tracing::info!(user = %name, "console login");
        Ok(Login {
            user: name,
            user_type: user.user_type.clone(),
            token,
            expires_in: self.timeout,
        })
    }

    /// Ends the session of `headers`' cookie, if any.
    pub(super) fn logout(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE)
            && let Some(s) = self.sessions.lock().remove(&digest(token))
        {
            tracing::info!(user = %s.user, "console logout");
        }
    }

    /// The caller of a request: anonymous with auth off, else the user of a valid session.
    ///
    /// # Errors
    /// 401 saying why there is no valid session.
    fn caller(
        &self,
        meta: &ClusterMetadata,
        headers: &HeaderMap,
        source: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller {
                principal: Principal::Anonymous,
                source,
                user_type: None,
                expires_in: None,
            });
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let token = cookie(headers, COOKIE)
            .ok_or_else(|| unauthorized("log in first: this console requires a Comet user"))?;
        let key = digest(token);
        let mut sessions = self.sessions.lock();
        let Some(s) = sessions.get(&key).cloned() else {
            return Err(unauthorized(
                "your session is unknown or has ended (logout, or a controller restart); log in \
                 again",
            ));
        };
        let now = Instant::now();
        if s.expires <= now {
            sessions.remove(&key);
            return Err(unauthorized("your session has expired; log in again"));
        }
        let Some(user) = meta
            .users
            .iter()
            .find(|u| *u.name == *s.user && u.sealed_secret == s.sealed)
        else {
            sessions.remove(&key);
            return Err(unauthorized(
                "your session has ended: the user was deleted or its password changed; log in \
                 again",
            ));
        };
        Ok(Caller {
            principal: Principal::User(s.user.clone()),
            source,
            user_type: Some(user.user_type.clone()),
            expires_in: Some(s.expires - now),
        })
    }

    /// The `Set-Cookie` value of a new session.
    pub(super) fn set_cookie(login: &Login) -> HeaderValue {
        let v = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            login.token,
            login.expires_in.as_secs()
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub(super) fn clear_cookie() -> HeaderValue {
        HeaderValue::from_static("comet_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Who makes a console request, and from where.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    principal: Principal,
    source: Option<IpAddr>,
    /// `super` or `normal` (auth on).
    user_type: Option<String>,
    /// Time left in the session (auth on).
    expires_in: Option<Duration>,
}

impl Caller {
    /// The user's name (none with auth off).
    pub(super) fn user(&self) -> Option<&str> {
        self.principal.user()
    }

    pub(super) fn user_type(&self) -> Option<&str> {
        self.user_type.as_deref()
    }

    pub(super) fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// Whether the caller may do `action` on `resource`.
    ///
    /// # Errors
    /// 403 naming the user, the action and the resource.
    pub(super) fn may(
        &self,
        c: &Console,
        resource: &Resource,
        action: Action,
    ) -> Result<(), ApiError> {
        c.inner
            .logins
            .gate
            .authorize(&self.principal, resource, action, self.source)
            .map_err(|f| ApiError::new(StatusCode::FORBIDDEN, f.to_string()))
    }

    /// Whether the caller may see `resource` in a list (`List` or `Get` on it).
    pub(super) fn sees(&self, c: &Console, resource: &Resource) -> bool {
        c.inner
            .logins
            .gate
            .authorize_any(
                &self.principal,
                resource,
                &[Action::List, Action::Get],
                self.source,
            )
            .is_ok()
    }
}

/// Middleware of the guarded `/api` routes: resolves the caller (401 without a valid session)
/// and hands it to the handler as an extension.
pub(super) async fn require_caller(
    State(c): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    let meta = c.inner.grpc.applied();
    match c.inner.logins.caller(&meta, request.headers(), source) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_auth::GateSettings;
    use comet_proto::comet::v1::User;

    fn logins(enabled: bool) -> (Logins, ClusterMetadata) {
        let cipher = Arc::new(SecretCipher::new(&[7u8; 32], &[]).unwrap());
        let sealed = cipher.seal("alice", b"alice-pw").unwrap();
        let meta = ClusterMetadata {
            users: vec![User {
                name: "alice".into(),
                sealed_secret: sealed,
                user_type: "normal".into(),
            }],
            ..Default::default()
        };
        let gate = Arc::new(Gate::new(GateSettings {
            enabled,
            max_clock_skew: None,
        }));
        (
            Logins::new(gate, Some(cipher), Duration::from_secs(60)),
            meta,
        )
    }

    fn with_cookie(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={token}")).unwrap(),
        );
        h
    }

    #[test]
    fn given_auth_on_when_logging_in_should_open_a_session_only_for_the_right_password() {
        let (l, meta) = logins(true);
        let e = l.login(&meta, "alice", "nope").err().unwrap();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e2 = l.login(&meta, "bob", "nope").err().unwrap();
        assert_eq!(
            e.message, e2.message,
            "unknown user and wrong password look alike"
        );
        let ok = l.login(&meta, "alice", "alice-pw").unwrap();
        assert_eq!(ok.token.len(), 64);
        let caller = l.caller(&meta, &with_cookie(&ok.token), None).unwrap();
        assert_eq!(caller.user(), Some("alice"));
        let e = l.caller(&meta, &HeaderMap::new(), None).err().unwrap();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let cookie = Logins::set_cookie(&ok);
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        l.logout(&with_cookie(&ok.token));
        assert!(l.caller(&meta, &with_cookie(&ok.token), None).is_err());
    }

    #[test]
    fn given_repeated_wrong_passwords_when_logging_in_should_lock_the_name_for_a_while() {
        let (l, meta) = logins(true);
        for _ in 0..MAX_FAILURES {
            let e = l.login(&meta, "alice", "nope").err().unwrap();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        }
        let e = l.login(&meta, "alice", "alice-pw").err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS, "{}", e.message);
        assert!(e.message.contains("try again"), "{}", e.message);
    }

    #[test]
    fn given_a_session_when_its_password_changes_should_end_it() {
        let (l, mut meta) = logins(true);
        let ok = l.login(&meta, "alice", "alice-pw").unwrap();
        meta.users[0].sealed_secret = "v1:other:AAAA".into();
        let e = l
            .caller(&meta, &with_cookie(&ok.token), None)
            .err()
            .unwrap();
        assert!(e.message.contains("password changed"), "{}", e.message);
    }

    #[test]
    fn given_auth_off_when_called_should_pass_anonymously_and_refuse_logins() {
        let (l, meta) = logins(false);
        let caller = l.caller(&meta, &HeaderMap::new(), None).unwrap();
        assert_eq!(caller.user(), None);
        let e = l.login(&meta, "alice", "alice-pw").err().unwrap();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }
}
