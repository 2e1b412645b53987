//! Test harness for whole-system tests: the local AWS sandbox with a seeded
//! fleet, a controller, and workers, either in this process ([`stack`]) or as
//! real processes ([`procs`]), plus client helpers.

pub mod browser;
pub mod chaos;
pub mod checks;
pub mod client;
pub mod creds;
pub mod fleets;
pub mod metrics;
pub mod otlp;
pub mod procs;
pub mod procstat;
pub mod proxy;
pub mod stack;

use muster_controller::store::testkit::TestDatabase;

/// Whether the whole-system tests run the controller on PostgreSQL:
/// `MUSTER_TEST_STORE=postgres` (on the server of `MUSTER_TEST_POSTGRES_URL`,
/// a database per test). SQLite otherwise. `deploy/local/test.sh` runs the
/// suite both ways.
pub fn on_postgres() -> bool {
    match std::env::var("MUSTER_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("MUSTER_TEST_STORE: {other}; must be sqlite or postgres"),
    }
}

/// A database of its own for a test's controller, when the tests run on
/// PostgreSQL.
pub fn test_database() -> Option<TestDatabase> {
    on_postgres().then(TestDatabase::create)
}
