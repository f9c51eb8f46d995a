//! Naming a Cardano node as cardano-tracer does (reference cardano-tracer.md §2.4): the
//! `niName` of its `NodeInfo` data point, else its NodeId (derived from the connection's
//! address); a name another connected node already holds also falls back to the NodeId.
//! A node's identity is its raw `niName` (as a native node's is its raw Hello name), not the
//! sanitised directory name: two names that sanitise alike (`x/y`, `x y`) are two nodes, and
//! the registry gives the second a collision suffix (`x_y-2`) instead of the first's state.

use crate::node;

/// cardano-tracer's NodeId of a connection: the peer address with `/`, `\`, `"` and spaces
/// turned into `-`, dots and the words `LocalAddress`/`pipe` removed, `-` trimmed; then
/// sanitised into a directory name. tracerd's `unix:` prefix of accepted Unix peers is dropped.
pub fn node_id(peer: &str) -> String {
    let raw = peer.strip_prefix("unix:").unwrap_or(peer);
    let mut id: String = raw
        .chars()
        .filter(|c| *c != '.')
        .map(|c| match c {
            '/' | '\\' | '"' | ' ' => '-',
            c => c,
        })
        .collect();
    for word in ["LocalAddress", "pipe"] {
        id = id.replace(word, "");
    }
    let id = id.trim_matches('-');
    node::dir_name(id).unwrap_or_else(|_| "node".to_string())
}

/// The `niName` of a `NodeInfo` JSON value, when it is a non-empty string.
pub fn ni_name(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let name = value.get("niName")?.as_str()?;
    (!name.trim().is_empty()).then(|| name.to_string())
}

/// How a node got its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From `NodeInfo`.
    NodeInfo,
    /// No usable `NodeInfo` (absent, empty, unanswered): the NodeId.
    NoNodeInfo,
    /// `niName` is held by another connected node: the NodeId.
    Collision,
}

/// A node's chosen name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The directory (and registry) name wanted.
    pub name: String,
    /// The node's identity: its raw `niName`, or the NodeId when it is named after that.
    pub identity: String,
    /// How it got the name.
    pub source: Source,
}

/// Chooses the directory name and identity of a node from its `NodeInfo` JSON (if any), its
/// peer address and the names connected now.
pub fn choose(node_info: Option<&[u8]>, peer: &str, connected: &[String]) -> Chosen {
    let by_id = |source| {
        let id = node_id(peer);
        Chosen {
            identity: id.clone(),
            name: id,
            source,
        }
    };
    let Some((raw, name)) = node_info
        .and_then(ni_name)
        .and_then(|raw| node::dir_name(&raw).ok().map(|name| (raw, name)))
    else {
        return by_id(Source::NoNodeInfo);
    };
    if connected.contains(&name) {
        return by_id(Source::Collision);
    }
    Chosen {
        name,
        identity: raw,
        source: Source::NodeInfo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_cardano_tracer() {
        assert_eq!(
            node_id("unix:/run/user/1000/cardano-tracer.demo.sock@0"),
            "run-user-1000-cardano-tracerdemosock_0"
        );
        assert_eq!(node_id("127.0.0.1:30004"), "127001_30004");
        assert_eq!(node_id("..."), "node");
    }

    #[test]
    fn names_come_from_node_info_with_fallbacks() {
        let info = br#"{"niName":"relay 1","niProtocol":"Cardano"}"#;
        let connected = vec!["other".to_string()];
        let short = |c: Chosen| (c.name, c.source);
        assert_eq!(
            short(choose(Some(info), "unix:/s@1", &connected)),
            ("relay_1".to_string(), Source::NodeInfo)
        );
        assert_eq!(
            short(choose(Some(br#"{"niName":""}"#), "unix:/s@1", &connected)),
            ("s_1".to_string(), Source::NoNodeInfo)
        );
        assert_eq!(
            short(choose(None, "unix:/s@1", &connected)),
            ("s_1".to_string(), Source::NoNodeInfo)
        );
        assert_eq!(
            short(choose(
                Some(br#"{"niName":"other"}"#),
                "unix:/s@2",
                &connected
            )),
            ("s_2".to_string(), Source::Collision)
        );
    }

    #[test]
    fn names_that_sanitise_alike_are_different_identities() {
        let a = choose(Some(br#"{"niName":"x/y"}"#), "unix:/s@1", &[]);
        let b = choose(Some(br#"{"niName":"x y"}"#), "unix:/s@2", &[]);
        assert_eq!((a.name.as_str(), b.name.as_str()), ("y", "x_y"));
        assert_ne!(a.identity, b.identity);
        let c = choose(Some(br#"{"niName":"x\ty"}"#), "unix:/s@3", &[]);
        assert_eq!(c.name, b.name);
        assert_ne!(c.identity, b.identity);
    }
}
