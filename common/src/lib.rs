//! Pieces every muster binary shares: AWS configuration with an endpoint
//! override, validated domain types, error classification, rate limiting,
//! telemetry and shutdown.

pub mod aws;
pub mod config;
pub mod domain;
pub mod ratelimit;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
