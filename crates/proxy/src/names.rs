//! Resource names: validation (RocketMQ's character rules) and namespace qualification.
//!
//! A resource in namespace `ns` is stored under `"<ns>%<name>"` (metadata.proto); without a
//! namespace the qualified name is the plain name. Namespaces themselves may not contain `%`, so
//! the prefix `"<ns>%"` is unambiguous and responses strip it back off.

use comet_proto::apache::rocketmq::v2::{Code, Resource};

use crate::context::RequestContext;
use crate::status::{Failure, Outcome};

/// Longest topic name (RocketMQ `TopicValidator.TOPIC_MAX_LENGTH`).
pub(crate) const TOPIC_MAX_LEN: usize = 127;
/// Longest consumer group name (RocketMQ `Validators.CHARACTER_MAX_LENGTH`).
pub(crate) const GROUP_MAX_LEN: usize = 255;
/// Longest namespace.
pub(crate) const NAMESPACE_MAX_LEN: usize = 64;

/// Name prefixes of RocketMQ's internal topics, which clients may not publish to.
const SYSTEM_TOPIC_PREFIXES: [&str; 4] = ["%RETRY%", "%DLQ%", "rmq_sys_", "RMQ_SYS_"];

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

/// Prefixes of per-group system topics, which keep their prefix in front of the namespace
/// (RocketMQ's rule): the dead-letter topic of group `ns%g` is `%DLQ%ns%g`.
const GROUP_TOPIC_PREFIXES: [&str; 2] = ["%DLQ%", "%RETRY%"];

/// `"<ns>%<name>"`, or `name` when `namespace` is empty; `%DLQ%<name>` in a namespace becomes
/// `%DLQ%<ns>%<name>` (the dead-letter topic of the qualified group).
pub(crate) fn qualify(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        return name.to_owned();
    }
    for prefix in GROUP_TOPIC_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("{prefix}{namespace}%{rest}");
        }
    }
    format!("{namespace}%{name}")
}

/// Strips the namespace off a qualified name (the inverse of [`qualify`]); names of other
/// namespaces are returned whole.
pub(crate) fn unqualify(namespace: &str, qualified: &str) -> String {
    if namespace.is_empty() {
        return qualified.to_owned();
    }
    for prefix in GROUP_TOPIC_PREFIXES {
        if let Some(rest) = qualified
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(namespace))
            .and_then(|r| r.strip_prefix('%'))
        {
            return format!("{prefix}{rest}");
        }
    }
    qualified
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('%'))
        .unwrap_or(qualified)
        .to_owned()
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

fn valid_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
}

fn namespace(ctx: &RequestContext, resource: &Resource, code: Code) -> Outcome<String> {
    let ns = ctx.namespace_of(&resource.resource_namespace);
    if ns.len() > NAMESPACE_MAX_LEN {
        return Err(Failure::new(
            code,
            format!(
                "namespace is too long: {} bytes, at most {NAMESPACE_MAX_LEN}",
                ns.len()
            ),
        ));
    }
    if !ns
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(Failure::new(
            code,
            format!("namespace {ns:?} contains illegal characters; allowed are [a-zA-Z0-9_-]"),
        ));
    }
    Ok(ns.to_owned())
}

/// Validates a topic Resource (namespace from the Resource or the header).
pub(crate) fn topic(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let code = Code::IllegalTopic;
    let resource = resource.ok_or_else(|| Failure::new(code, "topic is required"))?;
    let name = resource.name.as_str();
    if name.trim().is_empty() {
        return Err(Failure::new(code, "topic name must not be empty"));
    }
    if name.len() > TOPIC_MAX_LEN {
        return Err(Failure::new(
            code,
            format!(
                "topic name is too long: {} bytes, at most {TOPIC_MAX_LEN}",
                name.len()
            ),
        ));
    }
    if !valid_chars(name) {
        return Err(Failure::new(
            code,
            format!("topic name {name:?} contains illegal characters; allowed are [%|a-zA-Z0-9_-]"),
        ));
    }
    Ok(Name::new(&namespace(ctx, resource, code)?, name))
}

/// Validates a topic that is about to receive messages: a legal name and not a system topic.
pub(crate) fn writable_topic(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let name = topic(ctx, resource)?;
    if SYSTEM_TOPIC_PREFIXES
        .iter()
        .any(|p| name.name.starts_with(p))
    {
        return Err(Failure::new(
            Code::IllegalTopic,
            format!(
                "topic {} is a system topic; clients cannot publish to it",
                name.name
            ),
        ));
    }
    Ok(name)
}

/// Validates a consumer group Resource.
pub(crate) fn group(ctx: &RequestContext, resource: Option<&Resource>) -> Outcome<Name> {
    let code = Code::IllegalConsumerGroup;
    let resource = resource.ok_or_else(|| Failure::new(code, "consumer group is required"))?;
    let name = resource.name.as_str();
    if name.trim().is_empty() {
        return Err(Failure::new(code, "consumer group name must not be empty"));
    }
    if name.len() > GROUP_MAX_LEN {
        return Err(Failure::new(
            code,
            format!(
                "consumer group name is too long: {} bytes, at most {GROUP_MAX_LEN}",
                name.len()
            ),
        ));
    }
    if !valid_chars(name) {
        return Err(Failure::new(
            code,
            format!(
                "consumer group name {name:?} contains illegal characters; allowed are \
                 [%|a-zA-Z0-9_-]"
            ),
        ));
    }
    Ok(Name::new(&namespace(ctx, resource, code)?, name))
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

    #[test]
    fn qualification_round_trips() {
        assert_eq!(qualify("", "t"), "t");
        assert_eq!(qualify("ns", "t"), "ns%t");
        assert_eq!(unqualify("ns", "ns%t"), "t");
        assert_eq!(unqualify("ns", "other%t"), "other%t");
        assert_eq!(unqualify("", "ns%t"), "ns%t");
        assert_eq!(qualify("ns", "%DLQ%g"), "%DLQ%ns%g");
        assert_eq!(unqualify("ns", "%DLQ%ns%g"), "%DLQ%g");
        assert_eq!(qualify("", "%DLQ%g"), "%DLQ%g");
        assert_eq!(unqualify("", "%DLQ%g"), "%DLQ%g");
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
