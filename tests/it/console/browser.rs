//! Placeholder until the browser tests land.
