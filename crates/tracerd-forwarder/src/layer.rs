//! [`ForwarderLayer`]: a `tracing-subscriber` layer that turns a Rust program's `tracing`
//! events into trace objects and queues them on a [`crate::Forwarder`], under the tracing
//! configuration in force (the one tracerd pushed, or the program's).
//!
//! * **Namespace**: the event's target with `::` as `.`, then the names of the spans it is in,
//!   outermost first: `info!(target: "shop::orders", …)` inside span `checkout` is
//!   `shop.orders.checkout`.
//! * **Severity**: `TRACE` and `DEBUG` → Debug, `INFO` → Info, `WARN` → Warning, `ERROR` →
//!   Error.
//! * **Machine form** (a JSON object), by the detail level in force for the namespace:
//!   Minimal: `message` only; Normal: `message` and the event's fields; Detailed: also
//!   `spans` (`[{"name", "fields"}]`, outermost first); Maximum: also `target`, `file`, `line`.
//!   Numbers and booleans stay JSON numbers and booleans; anything else is its `Debug` text.
//!   The human form is the message.
//!
//! The severity filter is checked before anything is built, so a filtered event costs the
//! namespace and one lookup (see `examples/layer_bench.rs`). The layer never blocks: a full
//! queue drops the event and counts it, as [`crate::Forwarder::trace`] does.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracerd_wire::model::{DetailLevel, MachineForm, Severity, TraceObject};
use tracerd_wire::tracing_config::push_json_string;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::Shared;

/// Forwards `tracing` events through a [`crate::Forwarder`]; made by
/// [`crate::Forwarder::layer`]. Use it with a registry:
/// `tracing_subscriber::registry().with(forwarder.layer())`.
#[derive(Clone)]
pub struct ForwarderLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ForwarderLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwarderLayer")
    }
}

impl ForwarderLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> ForwarderLayer {
        ForwarderLayer { shared }
    }
}

/// The severity of a `tracing` level.
pub fn severity_of(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warning,
        Level::INFO => Severity::Info,
        _ => Severity::Debug,
    }
}

/// A span's recorded fields, as JSON object members (`"k":v,…`).
struct SpanFields(String);

/// Collects fields as JSON object members, and the message apart.
#[derive(Default)]
struct JsonFields {
    members: String,
    message: Option<String>,
}

impl JsonFields {
    /// The members, a span's `message` among them.
    fn into_members(mut self) -> String {
        if let Some(m) = self.message.take() {
            let mut out = String::from("\"message\":");
            push_json_string(&mut out, &m);
            if !self.members.is_empty() {
                out.push(',');
                out.push_str(&self.members);
            }
            return out;
        }
        self.members
    }

    fn key(&mut self, field: &Field) {
        if !self.members.is_empty() {
            self.members.push(',');
        }
        push_json_string(&mut self.members, field.name());
        self.members.push(':');
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.key(field);
            push_json_string(&mut self.members, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.key(field);
            push_json_string(&mut self.members, &text);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.members, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.members, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.members.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.members, "{value}");
        } else {
            push_json_string(&mut self.members, &value.to_string());
        }
    }
}

thread_local! {
    static NAMESPACE: RefCell<String> = const { RefCell::new(String::new()) };
    static THREAD_ID: String = {
        let id = format!("{:?}", std::thread::current().id());
        id.chars().filter(char::is_ascii_digit).collect()
    };
}

fn push_target(ns: &mut String, target: &str) {
    let mut parts = target.split("::");
    if let Some(first) = parts.next() {
        ns.push_str(first);
    }
    for p in parts {
        ns.push('.');
        ns.push_str(p);
    }
}

impl<S> Layer<S> for ForwarderLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut()
                .insert(SpanFields(fields.into_members()));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = JsonFields::default();
        values.record(&mut fields);
        let fields = fields.into_members();
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(SpanFields(members)) => {
                if !members.is_empty() && !fields.is_empty() {
                    members.push(',');
                }
                members.push_str(&fields);
            }
            None => ext.insert(SpanFields(fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let severity = severity_of(meta.level());
        let shared = &*self.shared;
        let check = |ns: &str| {
            let r = *crate::read(&shared.filter).resolve(ns);
            r.severity.admits(severity).then_some(r.detail)
        };
        // The namespace is built in a reused per-thread buffer; a nested call (an event
        // emitted while one is being forwarded) gets its own.
        let detail = NAMESPACE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut ns) => {
                ns.clear();
                namespace(&mut ns, event, &ctx);
                check(&ns).map(|d| (d, ns.clone()))
            }
            Err(_) => {
                let mut ns = String::new();
                namespace(&mut ns, event, &ctx);
                check(&ns).map(|d| (d, ns))
            }
        });
        let Some((detail, ns)) = detail else {
            shared
                .counters
                .filtered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let machine = machine(&fields, detail, event, &ctx);
        let object = TraceObject {
            namespace: ns.into(),
            severity,
            detail,
            timestamp_ns: crate::config::now_ns(),
            hostname: shared.hostname.clone().into(),
            thread_id: THREAD_ID.with(Clone::clone).into(),
            machine: machine.into(),
            form: MachineForm::Payload,
            human: fields.message.map(Into::into),
        };
        crate::submit(shared, std::iter::once(object));
    }
}

fn namespace<S>(ns: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    push_target(ns, event.metadata().target());
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            ns.push('.');
            ns.push_str(span.name());
        }
    }
}

fn machine<S>(
    fields: &JsonFields,
    detail: DetailLevel,
    event: &Event<'_>,
    ctx: &Context<'_, S>,
) -> String
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut out = String::with_capacity(64 + fields.members.len());
    out.push('{');
    let sep = |out: &mut String| {
        if out.len() > 1 {
            out.push(',');
        }
    };
    if let Some(m) = &fields.message {
        out.push_str("\"message\":");
        push_json_string(&mut out, m);
    }
    if detail >= DetailLevel::Normal && !fields.members.is_empty() {
        sep(&mut out);
        out.push_str(&fields.members);
    }
    if detail >= DetailLevel::Detailed {
        sep(&mut out);
        out.push_str("\"spans\":[");
        if let Some(scope) = ctx.event_scope(event) {
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                push_json_string(&mut out, span.name());
                out.push_str(",\"fields\":{");
                if let Some(SpanFields(members)) = span.extensions().get::<SpanFields>() {
                    out.push_str(members);
                }
                out.push_str("}}");
            }
        }
        out.push(']');
    }
    if detail >= DetailLevel::Maximum {
        let meta = event.metadata();
        sep(&mut out);
        out.push_str("\"target\":");
        push_json_string(&mut out, meta.target());
        if let Some(file) = meta.file() {
            out.push_str(",\"file\":");
            push_json_string(&mut out, file);
        }
        if let Some(line) = meta.line() {
            let _ = write!(out, ",\"line\":{line}");
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_dotted_namespaces() {
        let mut ns = String::new();
        push_target(&mut ns, "shop::orders");
        assert_eq!(ns, "shop.orders");
        assert_eq!(severity_of(&Level::TRACE), Severity::Debug);
        assert_eq!(severity_of(&Level::WARN), Severity::Warning);
    }
}
