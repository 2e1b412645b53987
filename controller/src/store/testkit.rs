//! PostgreSQL databases for tests: each test gets a database of its own on
//! the server the test run started (`MUSTER_TEST_POSTGRES_URL`, set by
//! `deploy/local/test.sh` from `deploy/local/postgres.sh start`), dropped
//! when the test ends.

/// The environment variable naming the test server's admin URL.
pub const SERVER_ENV: &str = "MUSTER_TEST_POSTGRES_URL";

/// A fresh, empty database, dropped (with any connection still open to it)
/// when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates one on the test server. Panics with what to do when no
    /// server is configured: a PostgreSQL test must never pass by skipping.
    pub fn create() -> Self {
        let admin_url = std::env::var(SERVER_ENV).unwrap_or_else(|_| {
            panic!(
                "{SERVER_ENV} is not set: run the suite with deploy/local/test.sh, or start a server with \
                 `deploy/local/postgres.sh start DIR` and export {SERVER_ENV}=<the URL it prints>"
            )
        });
        let name = format!("muster_test_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin_url}: {e}"));
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url }
    }

    /// Its connection string.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = admin(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement on the server's admin database, on a thread of its
/// own: the blocking driver must not run on a test's async thread.
fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_owned())?
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            super::with_database("postgres://muster@127.0.0.1:5/postgres?sslmode=disable", "t1"),
            "postgres://muster@127.0.0.1:5/t1?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h:5", "t1"), "postgres://u@h:5/t1");
    }
}
