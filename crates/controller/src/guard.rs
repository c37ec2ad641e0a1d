//! [`Guard`]: the check every controller admin call passes when auth is enabled, against the
//! node's gate (kept in step with the metadata by `access`).

use std::sync::Arc;
use std::time::SystemTime;

use comet_auth::{Action, Gate, Resource};
use tonic::{Request, Status};

/// The guard of admin calls: authentication and authorization against the node's gate.
#[derive(Clone)]
pub struct Guard {
    gate: Arc<Gate>,
}

impl Guard {
    pub(crate) fn new(gate: Arc<Gate>) -> Self {
        Guard { gate }
    }

    /// The gate it checks against.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Lets the call through when auth is off, or when its credentials are valid and allow
    /// `action` on `resource`.
    ///
    /// # Errors
    /// UNAUTHENTICATED saying what was wrong with the credentials; PERMISSION_DENIED naming
    /// the resource and action.
    pub(crate) fn check<T>(
        &self,
        request: &Request<T>,
        resource: &Resource,
        action: Action,
    ) -> Result<(), Status> {
        if !self.gate.enabled() {
            return Ok(());
        }
        let md = request.metadata();
        let principal = self
            .gate
            .authenticate(
                md.get(comet_auth::AUTHORIZATION_HEADER)
                    .map(|v| v.as_bytes()),
                md.get(comet_auth::DATE_TIME_HEADER)
                    .and_then(|v| v.to_str().ok()),
                SystemTime::now(),
            )
            .map_err(|r| Status::unauthenticated(r.to_string()))?;
        let source = request.remote_addr().map(|a| a.ip());
        self.gate
            .authorize(&principal, resource, action, source)
            .map_err(|f| Status::permission_denied(f.to_string()))
    }
}
