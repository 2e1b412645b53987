//! Pieces every muster binary shares: AWS configuration with an endpoint
//! override, validated domain types, error classification, rate limiting,
//! telemetry, shutdown and TLS.

pub mod aws;
pub mod config;
pub mod crash;
pub mod domain;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod identity;
pub mod net;
pub mod ratelimit;
pub mod retry;
pub mod shutdown;
pub mod signin;
pub mod telemetry;
pub mod tls;
