//! Resource names of requests: validated by `comet_vocab::names` (RocketMQ's rules) with the
//! proxy's codes (ILLEGAL_TOPIC, ILLEGAL_CONSUMER_GROUP), qualified by
//! `comet_vocab::namespace` (`"<ns>%<name>"`; responses strip the namespace back off).

use comet_proto::apache::rocketmq::v2::{Code, Resource};
use comet_vocab::names as rules;
use comet_vocab::namespace::{qualify, unqualify};

use crate::context::RequestContext;
use crate::status::{Failure, Outcome};

/// A validated resource name together with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `"<ns>%<name>"`, or `name` without a namespace.
    pub(crate) qualified: String,
}

impl Name {
    fn new(namespace: &str, name: &str) -> Name {
        Name {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            qualified: qualify(namespace, name),
        }
    }

    /// The public Resource for this name.
    pub(crate) fn resource(&self) -> Resource {
        Resource {
            resource_namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The internal Resource (qualified name, empty namespace) sent to brokers.
    pub(crate) fn internal(&self) -> Resource {
        Resource {
            resource_namespace: String::new(),
            name: self.qualified.clone(),
        }
    }
}

/// Turns a qualified resource from a broker into the public form for a client in `namespace`.
pub(crate) fn public_resource(namespace: &str, internal: &Resource) -> Resource {
    let name = unqualify(namespace, &internal.name);
    Resource {
        resource_namespace: if name.len() == internal.name.len() {
            String::new()
        } else {
            namespace.to_owned()
        },
        name,
    }
}

/// The failure of a name refused by `comet_vocab`, with the caller's code.
fn refused(code: Code, err: comet_vocab::Error) -> Failure {
    Failure::new(code, err.to_string())
}

fn namespace(ctx: &RequestContext, resource: &Resource, code: Code) -> Outcome<String> {
    let ns = ctx.namespace_of(&resource.resource_namespace);
    rules::validate_namespace(ns).map_err(|e| refused(code, e))?;
    Ok(ns.to_owned())
}

/// Validates a topic Resource (namespace from the Resource or the header).
pub(crate) fn topic(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let code = Code::IllegalTopic;
    let resource = resource.ok_or_else(|| Failure::new(code, "topic is required"))?;
    rules::validate_topic(&resource.name).map_err(|e| refused(code, e))?;
    Ok(Name::new(&namespace(ctx, resource, code)?, &resource.name))
}

/// Validates a topic that is about to receive messages: a legal name and not a system,
/// retry or dead-letter topic.
pub(crate) fn writable_topic(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let name = topic(ctx, resource)?;
    rules::validate_writable_topic(&name.name).map_err(|e| refused(Code::IllegalTopic, e))?;
    Ok(name)
}

/// Validates a consumer group Resource.
pub(crate) fn group(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let code = Code::IllegalConsumerGroup;
    let resource = resource.ok_or_else(|| Failure::new(code, "consumer group is required"))?;
    rules::validate_group(&resource.name).map_err(|e| refused(code, e))?;
    Ok(Name::new(&namespace(ctx, resource, code)?, &resource.name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn res(ns: &str, name: &str) -> Resource {
        Resource {
            resource_namespace: ns.into(),
            name: name.into(),
        }
    }

    /// Qualification itself is tested in `comet_vocab::namespace` (where this test's
    /// qualify/unqualify cases moved); here, the response side.
    #[test]
    fn public_resources_drop_the_namespace() {
        assert_eq!(public_resource("ns", &res("", "ns%t")), res("ns", "t"));
        assert_eq!(public_resource("ns", &res("", "x")), res("", "x"));
    }

    #[test]
    fn namespace_falls_back_to_the_header() {
        let ctx = RequestContext {
            namespace: "hdr".into(),
            ..RequestContext::default()
        };
        assert_eq!(topic(&ctx, Some(&res("", "t"))).unwrap().qualified, "hdr%t");
        assert_eq!(
            topic(&ctx, Some(&res("own", "t"))).unwrap().qualified,
            "own%t"
        );
        let err = topic(&ctx, Some(&res("a%b", "t"))).unwrap_err();
        assert_eq!(err.code, Code::IllegalTopic);
    }

    #[test]
    fn names_follow_rocketmq_rules() {
        let ctx = RequestContext::default();
        assert!(topic(&ctx, Some(&res("", "Topic_1-a|b%c"))).is_ok());
        for bad in ["", "  ", "a b", "t\u{e9}", &"x".repeat(128)] {
            let e = topic(&ctx, Some(&res("", bad))).unwrap_err();
            assert_eq!(e.code, Code::IllegalTopic, "{bad}");
        }
        assert_eq!(topic(&ctx, None).unwrap_err().message, "topic is required");
        assert!(group(&ctx, Some(&res("", &"g".repeat(255)))).is_ok());
        let e = group(&ctx, Some(&res("", &"g".repeat(256)))).unwrap_err();
        assert_eq!(e.code, Code::IllegalConsumerGroup);
        let e = writable_topic(&ctx, Some(&res("", "%DLQ%g"))).unwrap_err();
        assert!(e.message.contains("system topic"));
    }
}
