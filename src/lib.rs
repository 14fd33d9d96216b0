//! smart-autoscaler: an add-on that makes the native HorizontalPodAutoscaler predictive, node-aware and
//! cost-aware by serving an external metric it can scale on.
//!
//! Layout: [`domain`] is the pure core; [`http`] is the HTTP adapter; [`engine`] runs ticks and publishes
//! snapshots; [`refit`] refits and publishes forecasts in the background; [`tune`] tunes targets
//! in the background; [`demo`] is the simulated
//! cluster; [`app`] wires it together for `main`.

pub mod alerting;
pub mod app;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod config;
pub mod cost;
pub mod dataplane;
pub mod demo;
pub mod engine;
pub mod flags;
pub mod health;
pub mod http;
pub mod k8s;
pub mod prom;
pub mod refit;
pub mod report;
pub mod schedule;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod tune;

/// The pure core, its own crate (`crates/domain`) so that the compiler keeps IO out of it.
pub use smart_autoscaler_domain as domain;
