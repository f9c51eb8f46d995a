//! prost ↔ model for the tracing-configuration messages (capability `tracing-config.v1`).

use super::{detail_from_pb, detail_to_pb, invalid, pb, FrameError, TracingConfigReport};
use crate::model::Severity;
use crate::tracing_config::{NamespaceOptions, SeverityFilter, TracingConfig};

fn severity_filter_to_pb(s: Option<SeverityFilter>) -> pb::SeverityFilter {
    use pb::SeverityFilter as F;
    match s {
        None => F::Inherit,
        Some(SeverityFilter::Silence) => F::Silence,
        Some(SeverityFilter::AtLeast(s)) => match s {
            Severity::Debug => F::Debug,
            Severity::Info => F::Info,
            Severity::Notice => F::Notice,
            Severity::Warning => F::Warning,
            Severity::Error => F::Error,
            Severity::Critical => F::Critical,
            Severity::Alert => F::Alert,
            Severity::Emergency => F::Emergency,
        },
    }
}

fn severity_filter_from_pb(v: i32) -> Result<Option<SeverityFilter>, FrameError> {
    use pb::SeverityFilter as F;
    let f = F::try_from(v).map_err(|_| invalid(format!("unknown severity filter {v}")))?;
    let at = |s| Some(SeverityFilter::AtLeast(s));
    Ok(match f {
        F::Inherit => None,
        F::Debug => at(Severity::Debug),
        F::Info => at(Severity::Info),
        F::Notice => at(Severity::Notice),
        F::Warning => at(Severity::Warning),
        F::Error => at(Severity::Error),
        F::Critical => at(Severity::Critical),
        F::Alert => at(Severity::Alert),
        F::Emergency => at(Severity::Emergency),
        F::Silence => Some(SeverityFilter::Silence),
    })
}

/// The protobuf form of a configuration.
pub(super) fn to_pb(c: &TracingConfig) -> pb::TracingConfig {
    pb::TracingConfig {
        options: c
            .options
            .iter()
            .map(|(ns, o)| pb::NamespaceOptions {
                namespace: ns.clone(),
                severity: severity_filter_to_pb(o.severity) as i32,
                detail: o.detail.map(|d| detail_to_pb(d) as i32),
                max_frequency: o.max_frequency,
            })
            .collect(),
    }
}

/// A configuration from its protobuf form: a namespace given twice or an unknown enum value
/// is invalid. What [`TracingConfig::check`] refuses is left to the receiver, which answers
/// it (a node refuses the configuration, tracerd refuses the report) without closing.
pub(super) fn from_pb(c: pb::TracingConfig) -> Result<TracingConfig, FrameError> {
    let mut out = TracingConfig::default();
    for o in c.options {
        let options = NamespaceOptions {
            severity: severity_filter_from_pb(o.severity)?,
            detail: o.detail.map(detail_from_pb).transpose()?,
            max_frequency: o.max_frequency,
        };
        if out.options.insert(o.namespace.clone(), options).is_some() {
            return Err(invalid(format!(
                "tracing configuration names namespace {:?} twice",
                o.namespace
            )));
        }
    }
    Ok(out)
}

pub(super) fn report_to_pb(r: TracingConfigReport) -> pb::TracingConfigReport {
    pb::TracingConfigReport {
        request_id: r.request_id,
        effective: Some(to_pb(&r.effective)),
        refused: r.refused.unwrap_or_default(),
        timestamp_ns: r.timestamp_ns,
    }
}

pub(super) fn report_from_pb(
    r: pb::TracingConfigReport,
) -> Result<TracingConfigReport, FrameError> {
    Ok(TracingConfigReport {
        request_id: r.request_id,
        effective: from_pb(r.effective.unwrap_or_default())?,
        refused: (!r.refused.is_empty()).then_some(r.refused),
        timestamp_ns: r.timestamp_ns,
    })
}
