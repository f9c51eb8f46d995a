//! The part of Prometheus's Go templates that annotations use most: `{{ $labels.NAME }}`,
//! `{{ .Labels.NAME }}`, `{{ $value }}` and `{{ .Value }}`. Anything else between `{{` and
//! `}}` is refused when the rule file is loaded (so `tracerd validate` names it), never
//! printed half-expanded.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
    Value,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>, String);

impl Template {
    /// Parses `s`; an action other than the supported four is an error naming it.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {s:?}"))?;
            let action = after[..close]
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            let part = if action == "$value" || action == ".Value" {
                Part::Value
            } else if let Some(name) = action
                .strip_prefix("$labels.")
                .or_else(|| action.strip_prefix(".Labels."))
            {
                if !super::rules::valid_label_name(name) {
                    return Err(format!("{{{{ {action} }}}}: not a label name"));
                }
                Part::Label(name.to_string())
            } else {
                return Err(format!(
                    "{{{{ {action} }}}} is not supported (only $labels.NAME, .Labels.NAME, \
                     $value and .Value)"
                ));
            };
            parts.push(part);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts, s.to_string()))
    }

    /// The template as written.
    pub fn raw(&self) -> &str {
        &self.1
    }

    /// Expands the template for one alert: its series' labels and value (a missing label
    /// expands to nothing, as Go's template does for a missing map key with Prometheus's
    /// options).
    pub fn expand(&self, labels: &[(String, String)], value: f64) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(n) => {
                    if let Some((_, v)) = labels.iter().find(|(k, _)| k == n) {
                        out.push_str(v);
                    }
                }
                Part::Value => out.push_str(&format_value(value)),
            }
        }
        out
    }
}

/// A sample value as Go's `%v` prints a float64 in the common cases (`42`, `0.5`, `NaN`,
/// `+Inf`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v != 0.0 && (v.abs() >= 1e21 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_labels_and_value() {
        let t = Template::parse(
            "node {{ $labels.node }} ({{.Labels.job}}) at {{ $value }}{{ $labels.none }}",
        )
        .unwrap();
        let labels = vec![
            ("node".to_string(), "a".to_string()),
            ("job".to_string(), "j".to_string()),
        ];
        assert_eq!(t.expand(&labels, 42.0), "node a (j) at 42");
        assert_eq!(t.expand(&labels, 0.5), "node a (j) at 0.5");
    }

    #[test]
    fn refuses_other_actions() {
        assert!(Template::parse("{{ humanize $value }}").is_err());
        assert!(Template::parse("{{ $labels.x ").is_err());
        assert_eq!(Template::parse("plain").unwrap().expand(&[], 1.0), "plain");
    }
}
