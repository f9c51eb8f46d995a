//! The I/O probes config validation needs, in one named step before it: the gid of every
//! `tracerd.unixSocket.group` name (from `/etc/group`) and the contents of every
//! `metricsHelp` file. Validation itself (`validate.rs`) reads only the [`Probe`] it is given,
//! so it stays pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Config, MetricsHelp};

/// What the probes found, keyed by what was asked, so one `Probe` can serve several configs
/// (a reload validates a mix of the running config and the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `tracerd.unixSocket.group` value → its gid, or why it has none.
    pub groups: BTreeMap<String, Result<u32, String>>,
    /// `metricsHelp` file → its help map, or why it cannot be used.
    pub help_files: BTreeMap<PathBuf, Result<BTreeMap<String, String>, String>>,
}

impl Probe {
    /// Probes everything `configs` refer to (blocking: reads `/etc/group` and help files).
    pub fn gather(configs: &[&Config]) -> Probe {
        let mut probe = Probe::default();
        for config in configs {
            if let Some(group) = &config.tracerd.unix_socket.group {
                if !probe.groups.contains_key(group) {
                    probe.groups.insert(group.clone(), resolve_group(group));
                }
            }
            if let Some(MetricsHelp::File(path)) = &config.metrics_help {
                if !probe.help_files.contains_key(path) {
                    probe
                        .help_files
                        .insert(path.clone(), MetricsHelp::File(path.clone()).load());
                }
            }
        }
        probe
    }
}

/// Probes everything `config` refers to (blocking).
pub fn probe(config: &Config) -> Probe {
    Probe::gather(&[config])
}

impl MetricsHelp {
    /// The help map: the inline map, or the file's JSON object read now (blocking).
    pub fn load(&self) -> Result<BTreeMap<String, String>, String> {
        match self {
            MetricsHelp::Inline(map) => Ok(map.clone()),
            MetricsHelp::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{} is not a JSON object of metric name to help text: {e}",
                        path.display()
                    )
                })
            }
        }
    }
}

/// The gid of `group`: a number, or a name looked up in `/etc/group` (groups known only to
/// NSS services such as LDAP must be given as numbers). Blocking.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {group:?}: {e}"))?;
    group_in(&text, group)
        .ok_or_else(|| format!("no group {group:?} in /etc/group (give a numeric gid)"))
}

/// The gid of `group` in the text of an `/etc/group` file.
fn group_in(text: &str, group: &str) -> Option<u32> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let gid = parts.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lines_are_matched_by_name() {
        let text = "root:x:0:\nadm:x:4:syslog\ntracerd:x:991:\n";
        assert_eq!(group_in(text, "tracerd"), Some(991));
        assert_eq!(group_in(text, "trace"), None);
        assert_eq!(resolve_group("42"), Ok(42));
    }
}
