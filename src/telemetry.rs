//! Logging: `tracing` to stderr, human-readable or JSON (`--log-format
//! json`), filtered by `CALLGATE_LOG` (default `info`).
//!
//! Policy: nothing a client can provoke at will is logged above DEBUG.
//! rustls (through the `log` bridge) warns about what any client may send
//! (an IP address as SNI, which wrk and load balancers' health checks do;
//! a warning alert), so its records are kept to ERROR unless `CALLGATE_LOG`
//! names `rustls` itself; a failed handshake is logged by the accept loop at
//! DEBUG.

use tracing_subscriber::EnvFilter;

/// The filter when `CALLGATE_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber (once, from `main`).
pub fn init(format: LogFormat, filter: Option<&str>) {
    let filter = self::filter(filter);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// The log filter for `spec` (`CALLGATE_LOG`, else `DEFAULT_FILTER`), with
/// `rustls=error` added unless the spec has a directive for rustls.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.unwrap_or(DEFAULT_FILTER);
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let names_rustls = spec
        .split(',')
        .any(|directive| directive.trim_start().starts_with("rustls"));
    match "rustls=error".parse() {
        Ok(quiet) if !names_rustls => filter.add_directive(quiet),
        _ => filter,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a subscriber with `filter(spec)` writes for a WARN and an ERROR
    /// from rustls (the target its `log` records carry) and a WARN of ours.
    fn written(spec: Option<&str>) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(spec))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "rustls::msgs::handshake", "Illegal SNI extension");
            tracing::error!(target: "rustls::common_state", "traffic keys exhausted");
            tracing::warn!(target: "callgate::http", "ours");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn rustls_warnings_are_filtered_unless_asked_for() {
        for spec in [
            None,
            Some("debug"),
            Some("warn"),
            Some("info,tokio_rustls=debug"),
        ] {
            let out = written(spec);
            assert!(!out.contains("Illegal SNI"), "{spec:?}: {out}");
            assert!(out.contains("traffic keys exhausted"), "{spec:?}: {out}");
            assert!(out.contains("ours"), "{spec:?}: {out}");
        }
        assert!(written(Some("info,rustls=warn")).contains("Illegal SNI"));
    }
}
