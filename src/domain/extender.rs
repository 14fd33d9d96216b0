//! Scheduler extender decisions: which nodes fail the filter and how nodes are scored (pure; filled in by the extender work).
