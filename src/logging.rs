//! Log output for the `combined` access log: access lines alone on stdout, as nginx's
//! `access.log` would hold them, and every other line on stderr as usual.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

/// The target of access log events.
pub const ACCESS_TARGET: &str = "gatehouse::access";

/// Installs the global subscriber: `gatehouse::access` events as bare lines on stdout, all
/// others formatted on stderr.
pub fn init_combined(filter: EnvFilter, ansi: bool) {
    let is_access = |metadata: &tracing::Metadata<'_>| metadata.target() == ACCESS_TARGET;
    let other_lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(filter::filter_fn(move |m| !is_access(m)));
    let access_lines = tracing_subscriber::fmt::layer()
        .event_format(MessageOnly)
        .with_writer(std::io::stdout)
        .with_filter(filter::filter_fn(is_access));
    tracing_subscriber::registry()
        .with(filter)
        .with(other_lines)
        .with(access_lines)
        .init();
}

/// Writes an event's message and nothing else: no time, level, target or span prefix.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = MessageField {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut message);
        message.result?;
        writeln!(writer)
    }
}

struct MessageField<'w, 'a> {
    writer: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl Visit for MessageField<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}
