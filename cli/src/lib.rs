//! The muster command line: submit, plan, watch, ls, show, results, cancel.

pub mod args;
pub mod commands;
pub mod config;
pub mod connect;
pub mod refusal;
pub mod render;
pub mod schedule;
pub mod signin;
pub mod spec;
pub mod watch;
