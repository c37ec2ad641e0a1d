//! Readiness: components of a node (the controller, the broker's store, the proxy) register
//! and report ready or not ready with a reason; the node is ready when at least one component
//! registered and every one is ready. `/readyz` answers from here.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Clone)]
struct State {
    ready: bool,
    reason: String,
}

/// The readiness registry of one node; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, State>>>,
}

/// One registered component; reports into its registry.
#[derive(Debug, Clone)]
pub struct Component {
    name: String,
    readiness: Readiness,
}

/// A snapshot of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the node is ready.
    pub ready: bool,
    /// Each component: name, ready, reason when not.
    pub components: Vec<(String, bool, String)>,
}

impl Readiness {
    /// Registers `name` as not ready ("starting"); registering again resets it.
    pub fn register(&self, name: &str) -> Component {
        self.components.lock().insert(
            name.to_owned(),
            State {
                ready: false,
                reason: "starting".to_owned(),
            },
        );
        Component {
            name: name.to_owned(),
            readiness: self.clone(),
        }
    }

    /// The current state.
    pub fn report(&self) -> Report {
        let map = self.components.lock();
        let components: Vec<(String, bool, String)> = map
            .iter()
            .map(|(n, s)| (n.clone(), s.ready, s.reason.clone()))
            .collect();
        Report {
            ready: !components.is_empty() && components.iter().all(|c| c.1),
            components,
        }
    }
}

impl Component {
    /// Reports ready.
    pub fn set_ready(&self) {
        self.set(true, "");
    }

    /// Reports not ready, saying why (`draining`, `store recovering`, ...).
    pub fn set_not_ready(&self, reason: &str) {
        self.set(false, reason);
    }

    fn set(&self, ready: bool, reason: &str) {
        if let Some(s) = self.readiness.components.lock().get_mut(&self.name) {
            s.ready = ready;
            reason.clone_into(&mut s.reason);
        }
    }
}

impl Report {
    /// The report as lines of text: `ready` or `not ready`, then one line per component.
    pub fn to_text(&self) -> String {
        let mut out = String::from(if self.ready { "ready\n" } else { "not ready\n" });
        if self.components.is_empty() {
            out.push_str("no component registered yet\n");
        }
        for (name, ready, reason) in &self.components {
            if *ready {
                out.push_str(&format!("{name}: ready\n"));
            } else {
                out.push_str(&format!("{name}: not ready ({reason})\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_components_should_be_ready_only_when_all_are() {
        let r = Readiness::default();
        assert!(!r.report().ready, "nothing registered is not ready");
        let a = r.register("controller");
        let b = r.register("broker");
        a.set_ready();
        assert!(!r.report().ready);
        b.set_ready();
        assert!(r.report().ready);
        b.set_not_ready("draining");
        let report = r.report();
        assert!(!report.ready);
        assert!(report.to_text().contains("broker: not ready (draining)"));
    }
}
