//! `comet client list`: the clients connected to any proxy, as the controller's client
//! directory holds them (the proxies report to every controller).

use comet_proto::comet::v1::ListClientsRequest;
use serde_json::{Value, json};

use super::args::{AdminTarget, ClientCommand};
use super::controller_api::client;
use super::parse::qualify;

/// Runs a `comet client` command.
pub async fn client_cmd(target: &AdminTarget, cmd: &ClientCommand) -> anyhow::Result<Value> {
    let controllers = client(target)?;
    let ns = &target.namespace;
    match cmd {
        ClientCommand::List(args) => {
            let topic = args.topic.as_deref().map(|t| qualify(ns, t)).transpose()?;
            let group = args.group.as_deref().map(|g| qualify(ns, g)).transpose()?;
            let req = ListClientsRequest {
                topic: topic.unwrap_or_default(),
                group: group.unwrap_or_default(),
            };
            let reply = controllers
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.list_clients(req).await }
                })
                .await
                .map_err(|s| {
                    anyhow::anyhow!(
                        "listing clients: {} ({:?}); is a controller running at the address \
                         given by --controller?",
                        s.message(),
                        s.code()
                    )
                })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let clients: Vec<Value> = reply
                .clients
                .iter()
                .filter_map(|l| {
                    let c = l.client.as_ref()?;
                    Some(json!({
                        "client_id": c.client_id,
                        "type": c.client_type,
                        "language": c.language,
                        "version": c.version,
                        "group": c.group,
                        "topics": c.topics,
                        "host": c.hostname,
                        "proxy": l.proxy,
                        "idle_s": now.saturating_sub(c.last_heartbeat_ms).max(0) / 1000,
                    }))
                })
                .collect();
            Ok(json!({"proxies": reply.proxies, "clients": clients}))
        }
    }
}
