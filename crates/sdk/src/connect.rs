//! Starting a client's session: the first access point that answers, then the background
//! loops.
//!
//! [`start`] opens a telemetry stream to each configured access point in turn, beginning with
//! the preferred one, and waits for the server's settings echo; when a stream cannot even be
//! opened (refused connection, untrusted certificate) the next access point is tried at once,
//! and the last failure, not a timeout, is what `build()` reports. The access point that
//! answered becomes the preferred one; then the heartbeat and route refresh loops start under
//! the session's task tracker.
//!
//! This sits above [`crate::session`], [`crate::telemetry`] and [`crate::route`], the three
//! pieces it starts, so none of them names another one above it.

use crate::error::Result;
use crate::session::Session;
use crate::{route, telemetry};

/// Connects `session`: settings synced with the first access point that answers, then the
/// heartbeat and route refresh loops running. On failure the session is cancelled.
pub(crate) async fn start(session: &Session) -> Result<()> {
    let n = session.config().access_points.len();
    let mut last = None;
    for i in 0..n {
        let index = (session.preferred_index() + i) % n;
        let access = session.access_point_at(index);
        let (seen, failures_seen) = session.sync_marks();
        telemetry::ensure(session, &access);
        match session
            .wait_synced(seen, Some(failures_seen), &access)
            .await
        {
            Ok(()) => {
                session.prefer(index);
                last = None;
                break;
            }
            Err(e) => {
                tracing::warn!(endpoint = %access.key, error = %e, "access point unusable");
                session.drop_telemetry(&access.key);
                last = Some(e);
            }
        }
    }
    if let Some(e) = last {
        session.token().cancel();
        return Err(e);
    }
    let me = session.clone();
    session
        .tasks()
        .spawn(async move { me.heartbeat_loop().await });
    let me = session.clone();
    session
        .tasks()
        .spawn(async move { route::refresh_loop(me).await });
    Ok(())
}
