//! The production engine: PostgreSQL (Amazon Aurora PostgreSQL or RDS),
//! shared by several controllers.
//!
//! Each controller keeps one writer connection and a few readers. Every
//! write transaction first takes one transaction-scoped advisory lock, so
//! writes from all controllers run one at a time, as they do on SQLite's
//! single writer: the store's read-modify-write logic (grant a lease if none
//! is live, count an error once) holds across controllers without
//! serialization retries. Group commit keeps the lock's cost per write low.
//!
//! The driver is rust-postgres (`postgres`, the blocking face of
//! `tokio-postgres`): the store's queries run as closures on the writer
//! thread and on blocking reader threads, never on the async workers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement};

use super::StoreResult;
use super::sql::{Datum, Engine, Sql, Value, dollar_placeholders};

/// The advisory lock every write transaction takes: one writer at a time
/// across all controllers. (An arbitrary constant: "muster" in ASCII.)
pub(super) const WRITE_LOCK: i64 = 0x6d75_7374_6572;
/// The advisory lock migrations run under, so that controllers starting
/// together do not migrate twice.
pub(super) const MIGRATE_LOCK: i64 = 0x6d75_7374_6572 + 1;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 512;

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => v.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a parameter of type {ty}").into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => Err(format!("a double cannot be bound to a parameter of type {ty}").into()),
            },
            Value::Text(v) => match *ty {
                Type::BYTEA => v.as_bytes().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Datum {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Datum::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Datum::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Datum::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Datum::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Datum::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Datum::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Datum::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Datum::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            _ => Datum::Text(<String>::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Datum::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What went wrong, in words: the server's message with its SQLSTATE code
/// (the driver's own Display says only "db error"), or the driver's.
pub(super) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("postgres: {} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(": {detail}"));
            }
            text
        }
        None => format!("postgres: {error}"),
    }
}

/// One connection with its prepared statements.
pub(super) struct PgConn {
    client: RefCell<Client>,
    statements: RefCell<HashMap<String, Statement>>,
}

impl PgConn {
    /// Connects.
    pub(super) fn connect(target: &Target) -> StoreResult<Self> {
        let mut client = target.connect()?;
        // A controller that stops in the middle of a transaction (a frozen
        // host) must not hold the write lock for good: the server ends
        // such a session after a few seconds, and the others go on.
        client.batch_execute("SET idle_in_transaction_session_timeout = 5000")?;
        Ok(Self {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        })
    }

    /// Connects and brings the schema up to date: the first connection a
    /// store makes.
    pub(super) fn connect_migrated(target: &Target) -> StoreResult<Self> {
        let mut conn = Self::connect(target)?;
        super::schema::migrate_postgres(conn.client.get_mut())?;
        Ok(conn)
    }

    /// Whether the connection is gone (the server restarted or failed over).
    pub(super) fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str) -> StoreResult<Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.borrow_mut().prepare(&dollar_placeholders(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

fn bind<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Sql for PgConn {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn execute_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<usize> {
        let statement = self.statement(sql)?;
        let changed = self.client.borrow_mut().execute(&statement, &bind(params))?;
        Ok(changed as usize)
    }

    fn query_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<Vec<Vec<Datum>>> {
        let statement = self.statement(sql)?;
        let rows = self.client.borrow_mut().query(&statement, &bind(params))?;
        rows.iter()
            .map(|row| (0..row.len()).map(|i| Ok(row.try_get::<_, Datum>(i)?)).collect())
            .collect()
    }

    fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }
}

/// Where the database is and how to reach it.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    tls: Tls,
    shown: String,
}

#[derive(Clone)]
enum Tls {
    /// Loopback or a private network the operator vouches for
    /// (`sslmode=disable`).
    Off,
    /// TLS, verified against these roots.
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Parses a connection string (`postgres://user@host:5432/db?sslmode=require`
    /// or `host=... user=...`). `password`, when given, replaces the one in
    /// the string (a Secrets Manager secret handed in by the task's
    /// environment). `ca_pem` are extra roots for the server's certificate
    /// (the RDS CA bundle); without them the system's roots are used.
    pub fn parse(url: &str, password: Option<&str>, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("database_url: not a PostgreSQL connection string: {e}"))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        refuse_milliseconds(&config)?;
        notice_vanished_hosts(&mut config);
        config.application_name("muster-controller");
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => Tls::Off,
            _ => Tls::On(rustls_connector(ca_pem)?),
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let shown = format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        Ok(Self { config, tls, shown })
    }

    /// Whether connections must use TLS (`sslmode=require`).
    pub fn tls_required(&self) -> bool {
        self.config.get_ssl_mode() == postgres::config::SslMode::Require
    }

    /// Whether every host is this machine (a loopback address, `localhost`
    /// or a Unix socket).
    pub fn on_loopback(&self) -> bool {
        self.config.get_hosts().iter().all(|host| match host {
            postgres::config::Host::Tcp(name) => {
                name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            postgres::config::Host::Unix(_) => true,
        })
    }

    /// The database, without credentials, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn connect(&self) -> StoreResult<Client> {
        Ok(match &self.tls {
            Tls::Off => self.config.connect(postgres::NoTls)?,
            Tls::On(tls) => self.config.connect(tls.clone())?,
        })
    }
}

/// How long a database host may leave the connection silent before it is
/// given up for gone, unless the connection string says otherwise.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may go unacknowledged (Linux's `TCP_USER_TIMEOUT`).
const UNACKNOWLEDGED: Duration = Duration::from_secs(20);
/// The driver's keepalive idle time when the connection string names none.
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A database host that vanished without closing its connections (an
/// instance lost with its AZ, a black-holed route during a failover) is
/// noticed in seconds, not in the kernel's defaults: about 11 minutes of
/// keepalive probes for an idle connection, and for a query whose packets
/// go unanswered about 15 minutes of retransmissions, during which the
/// writer, and with it every write of this controller, waits. Measured in
/// BENCHMARKS.md ("The database host vanishes"). What the connection string
/// sets (`keepalives_idle`, `keepalives_interval`, `keepalives_retries`,
/// `tcp_user_timeout`, in seconds, unlike libpq's milliseconds; `keepalives=0`)
/// stays.
fn notice_vanished_hosts(config: &mut postgres::Config) {
    // The driver cannot say whether an idle time was given, only what it
    // is: its own default stands for "none given".
    if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(UNACKNOWLEDGED);
    }
}

/// The longest `tcp_user_timeout` taken: past it, the value is libpq's
/// milliseconds read as seconds.
const MOST_UNACKNOWLEDGED: Duration = Duration::from_secs(60 * 60);

/// libpq reads `tcp_user_timeout` in milliseconds and this driver in
/// seconds, so a connection string written for libpq
/// (`tcp_user_timeout=20000`, 20 s) would mean 5.5 hours here: a host that
/// vanished would hold the writer that long. Refused with the rule, not
/// taken.
fn refuse_milliseconds(config: &postgres::Config) -> Result<(), String> {
    match config.get_tcp_user_timeout() {
        Some(given) if *given > MOST_UNACKNOWLEDGED => Err(format!(
            "database_url: tcp_user_timeout={} is read in seconds here, not in libpq's milliseconds, \
             and must be at most {}; for {} ms write tcp_user_timeout={}",
            given.as_secs(),
            MOST_UNACKNOWLEDGED.as_secs(),
            given.as_secs(),
            given.as_secs().div_ceil(1000),
        )),
        _ => Ok(()),
    }
}

fn rustls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("database_ca: not a PEM certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("database_ca: not a usable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("database_ca: no certificate in the file".into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "database TLS: no system CA certificates found; give database_ca (for RDS, its CA bundle)".into(),
                );
            }
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("database TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// LISTENs on `channels` with a connection of its own and hands `deliver`
/// each notification's channel and payload, and `None` whenever a second
/// passes without one, until it answers false. A lost connection is made
/// again (what was told in between is missed).
pub(super) fn listen(target: &Target, channels: &[&str], mut deliver: impl FnMut(Option<(&str, &str)>) -> bool) {
    let mut failures = 0_u32;
    loop {
        let error = match PgConn::connect(target) {
            Ok(conn) => match hear(conn.client.into_inner(), channels, &mut failures, &mut deliver) {
                Ok(()) => return,
                Err(error) => error,
            },
            Err(error) => error.to_string(),
        };
        failures += 1;
        tracing::warn!(database = %target.shown(), %error, "store: listening for other controllers' writes; connecting again");
        if !deliver(None) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(failures.min(10))));
    }
}

/// One connection's life in [`listen`]: LISTENs (then `failures` starts
/// again from 0) and delivers until `deliver` answers false (`Ok`), or the
/// connection fails (`Err`, what went wrong).
fn hear(
    mut client: postgres::Client,
    channels: &[&str],
    failures: &mut u32,
    deliver: &mut impl FnMut(Option<(&str, &str)>) -> bool,
) -> Result<(), String> {
    use postgres::fallible_iterator::FallibleIterator as _;
    let listens: Vec<String> = channels.iter().map(|channel| format!("LISTEN {channel}")).collect();
    client.batch_execute(&listens.join("; ")).map_err(|e| describe(&e))?;
    *failures = 0;
    loop {
        {
            let mut notifications = client.notifications();
            let mut told = notifications.timeout_iter(std::time::Duration::from_secs(1));
            // The iterator ends with `None` after a second without one, or
            // when the server hung up.
            while let Some(note) = told.next().map_err(|e| describe(&e))? {
                if !deliver(Some((note.channel(), note.payload()))) {
                    return Ok(());
                }
            }
        }
        if client.is_closed() {
            return Err("the server closed the connection".to_owned());
        }
        if !deliver(None) {
            return Ok(());
        }
    }
}

/// Runs `body` in one transaction on the writer's connection and commits,
/// after taking [`WRITE_LOCK`]. A connection found closed is replaced first.
pub(super) fn in_transaction(conn: &mut PgConn, target: &Target, body: &mut dyn FnMut(&dyn Sql)) -> StoreResult<()> {
    if conn.is_closed() {
        tracing::warn!(database = %target.shown(), "store: the writer's connection was lost; reconnecting");
        *conn = PgConn::connect(target)?;
    }
    // The transaction and its lock in one round trip.
    let outcome = conn
        .execute_batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
        .map(|()| body(&*conn))
        .and_then(|()| conn.execute_batch("COMMIT"));
    if outcome.is_err() && !conn.is_closed() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_host_is_noticed_in_seconds_unless_the_connection_string_says_otherwise() {
        let target = Target::parse("postgres://muster@db.internal:5432/muster?sslmode=disable", None, None).unwrap();
        let config = &target.config;
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        assert_eq!(config.get_tcp_user_timeout(), Some(&UNACKNOWLEDGED));

        let given = Target::parse(
            "postgres://muster@db.internal:5432/muster?sslmode=disable&keepalives_idle=30&keepalives_interval=2\
             &keepalives_retries=7&tcp_user_timeout=45",
            None,
            None,
        )
        .unwrap();
        let config = &given.config;
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(config.get_keepalives_interval(), Some(Duration::from_secs(2)));
        assert_eq!(config.get_keepalives_retries(), Some(7));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(45)));

        let off = Target::parse("host=db.internal user=muster keepalives=0 sslmode=disable", None, None).unwrap();
        assert!(!off.config.get_keepalives(), "keepalives=0 is the operator's to give");
        assert_eq!(off.config.get_tcp_user_timeout(), Some(&UNACKNOWLEDGED));
    }

    #[test]
    fn a_tcp_user_timeout_written_in_libpq_milliseconds_is_refused_with_the_rule() {
        let error = Target::parse(
            "postgres://muster@db.internal:5432/muster?sslmode=disable&tcp_user_timeout=20000",
            None,
            None,
        )
        .expect_err("20000 s is no timeout");
        assert_eq!(
            error,
            "database_url: tcp_user_timeout=20000 is read in seconds here, not in libpq's milliseconds, \
             and must be at most 3600; for 20000 ms write tcp_user_timeout=20"
        );
        let hour = Target::parse(
            "host=db.internal user=muster sslmode=disable tcp_user_timeout=3600",
            None,
            None,
        )
        .expect("an hour is taken");
        assert_eq!(hour.config.get_tcp_user_timeout(), Some(&Duration::from_secs(3600)));
    }
}
