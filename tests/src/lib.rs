//! Test harness for whole-system tests: the local AWS sandbox with a seeded
//! fleet, a controller, and workers, either in this process ([`stack`]) or as
//! real processes ([`procs`]), plus client helpers.

pub mod chaos;
pub mod checks;
pub mod client;
pub mod creds;
pub mod fleets;
pub mod otlp;
pub mod procs;
pub mod procstat;
pub mod proxy;
pub mod stack;
