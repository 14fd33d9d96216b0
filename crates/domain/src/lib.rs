//! The pure, synchronous core of smart-autoscaler, its own crate so that no IO crate can creep in: no IO, no
//! clocks, no async. Everything here is a function of its inputs and is unit-tested with plain `#[test]`s.

pub mod admission;
pub mod anomaly;
pub mod backtest;
pub mod cluster;
pub mod connections;
pub mod contract;
pub mod cost;
pub mod decision;
pub mod events;
pub mod extender;
pub mod external_rules;
pub mod forecast;
pub mod hpa;
pub mod model;
pub mod pod;
pub mod quantity;
pub mod report;
pub mod rightsizing;
pub mod scenarios;
pub mod schedule;
pub mod selector;
#[doc(hidden)]
pub mod testing;
pub mod tick;
pub mod tuning;
