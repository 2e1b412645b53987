//! Databases for the store's own tests, and [`store_matrix!`], which runs
//! each test against both engines.

use std::ops::Deref;

use super::sql::Sql;

/// A fresh, migrated database that lives as long as this value.
pub struct TestDb {
    conn: Box<dyn Sql + Send>,
    /// The PostgreSQL database, dropped after the connection closes.
    _database: Option<super::testkit::TestDatabase>,
}

impl TestDb {
    /// An in-memory SQLite database.
    pub fn sqlite() -> Self {
        let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
        super::schema::migrate_sqlite(&mut conn).expect("migrate");
        Self {
            conn: Box::new(conn),
            _database: None,
        }
    }

    /// A database of its own on the test run's PostgreSQL server.
    pub fn postgres() -> Self {
        let database = super::testkit::TestDatabase::create();
        let target = super::PostgresTarget::parse(database.url(), None, None).expect("test database URL");
        let conn =
            super::postgres::PgConn::connect_migrated(&target).expect("connect to the test database and migrate");
        Self {
            conn: Box::new(conn),
            _database: Some(database),
        }
    }
}

impl Deref for TestDb {
    type Target = dyn Sql;

    fn deref(&self) -> &Self::Target {
        self.conn.as_ref()
    }
}

impl Sql for TestDb {
    fn engine(&self) -> super::Engine {
        self.conn.engine()
    }

    fn execute_values(&self, sql: &str, params: &[super::sql::Value<'_>]) -> super::StoreResult<usize> {
        self.conn.execute_values(sql, params)
    }

    fn query_values(
        &self,
        sql: &str,
        params: &[super::sql::Value<'_>],
    ) -> super::StoreResult<Vec<Vec<super::sql::Datum>>> {
        self.conn.query_values(sql, params)
    }

    fn execute_batch(&self, sql: &str) -> super::StoreResult<()> {
        self.conn.execute_batch(sql)
    }
}

/// Campaign `c1` with `count` pending Linux targets `i-1`, `i-2`, ... in
/// one scope, counted.
pub fn pending_campaign(conn: &dyn Sql, (account, region): (&str, &str), count: usize) {
    use muster_proto::v1::{Platform, TargetStatus};
    super::campaigns::insert(conn, &super::campaigns::NewCampaign::for_test("c1", 3)).unwrap();
    for n in 1..=count {
        conn.execute(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, platform, status)
             VALUES ('c1', ?1, ?2, ?3, ?4, ?5)",
            super::sql::params![
                account,
                region,
                format!("i-{n}"),
                Platform::Linux as i32,
                TargetStatus::Pending as i32
            ],
        )
        .unwrap();
    }
    super::records::bump(conn, "c1", account, region, TargetStatus::Pending as i32, count as i64).unwrap();
}

/// Store tests that run against both engines: each `fn name(conn) { ... }`
/// becomes a module `name` with the tests `sqlite` and `postgres`.
macro_rules! store_matrix {
    ($($(#[$meta:meta])* fn $name:ident($conn:ident) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn case($conn: $crate::store::testing::TestDb) $body

            #[test]
            fn sqlite() {
                case($crate::store::testing::TestDb::sqlite());
            }

            #[test]
            fn postgres() {
                case($crate::store::testing::TestDb::postgres());
            }
        }
    )*};
}
pub(crate) use store_matrix;
