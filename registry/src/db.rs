//! One way to speak to the registry's two databases: SQLite (the embedded default: pilots,
//! labs, the README's demo) and PostgreSQL (the national registry, several processes on
//! one database). The store's SQL is written once, in the subset both understand, with
//! `?N` placeholders (rewritten to PostgreSQL's `$N`); the few statements that differ ask
//! [`Db::engine`].
//!
//! Both clients block. The store runs on tokio's blocking pool, as it always did with
//! SQLite; the `postgres` crate is tokio-postgres behind a blocking facade (ARCHITECTURE.md
//! says why that and not sqlx).

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {column}: {why}")]
    Column { column: usize, why: String },
    #[error("the query returned no row")]
    NoRow,
}

/// The server's own sentence (e.g. "duplicate key value violates …"), not just "db error".
fn postgres_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(server) => format!("{}: {}", server.severity(), server.message()),
        None => error.to_string(),
    }
}

pub type DbResult<T> = Result<T, DbError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A bound value, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    /// A PostgreSQL `text[]` (`= ANY(?1)`, `UNNEST(?1)`): statements only PostgreSQL runs.
    Texts(&'a [&'a str]),
}

/// What can be bound to a `?N`.
pub trait ToValue {
    fn value(&self) -> Value<'_>;
}

macro_rules! int_value {
    ($($int:ty),*) => {$(
        impl ToValue for $int {
            fn value(&self) -> Value<'_> {
                // Ids, sequence numbers and seconds: far below i64::MAX.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_value!(i64, i32, u32, u64, usize);

impl ToValue for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for [&str] {
    fn value(&self) -> Value<'_> {
        Value::Texts(self)
    }
}
impl ToValue for Vec<&str> {
    fn value(&self) -> Value<'_> {
        Value::Texts(self)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::value)
    }
}

/// `params![a, b]`: the values bound to `?1`, `?2`.
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::db::ToValue),*] as &[&dyn $crate::db::ToValue]
    };
}
pub use params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(value) => ValueRef::Integer(value),
            Value::Real(value) => ValueRef::Real(value),
            Value::Text(value) => ValueRef::Text(value.as_bytes()),
            Value::Blob(value) => ValueRef::Blob(value),
            Value::Texts(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "a list is a PostgreSQL parameter".into(),
                ))
            }
        }))
    }
}

impl ToSql for Value<'_> {
    /// As the parameter's type asks, the way SQLite's affinity would: the store's SQL
    /// is shared, and PostgreSQL infers each `$N`'s type from where it stands.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(value)?.to_sql(ty, out),
                Type::BOOL => (value != 0).to_sql(ty, out),
                Type::FLOAT8 => (value as f64).to_sql(ty, out),
                _ => value.to_string().to_sql(&Type::TEXT, out),
            },
            Value::Real(value) => match *ty {
                Type::FLOAT4 => (value as f32).to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Value::Text(value) => value.to_sql(ty, out),
            Value::Blob(value) => value.to_sql(ty, out),
            Value::Texts(values) => values.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One row of a result, from either engine.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// A text column, borrowed from the row.
    pub fn str(&self, column: usize) -> DbResult<&str> {
        match self {
            Row::Sqlite(row) => row
                .get_ref(column)?
                .as_str()
                .map_err(|error| DbError::Column {
                    column,
                    why: error.to_string(),
                }),
            Row::Postgres(row) => row.try_get(column).map_err(pg_failed(column)),
        }
    }

    pub fn get<T: FromColumn>(&self, column: usize) -> DbResult<T> {
        match self {
            Row::Sqlite(row) => T::from_sqlite(row, column).map_err(DbError::from),
            Row::Postgres(row) => T::from_postgres(row, column),
        }
    }
}

/// What a column can be read as.
pub trait FromColumn: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self>;
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self>;
}

fn pg_failed(column: usize) -> impl FnOnce(postgres::Error) -> DbError {
    move |error| DbError::Column {
        column,
        why: error.to_string(),
    }
}

/// An integer however PostgreSQL typed the expression (`COUNT` is bigint, a comparison
/// boolean, a literal int4): SQLite has one integer type and the SQL is shared.
fn pg_int(row: &postgres::Row, column: usize) -> DbResult<Option<i64>> {
    let ty = row
        .columns()
        .get(column)
        .map(|c| c.type_().clone())
        .ok_or(DbError::Column {
            column,
            why: "no such column".into(),
        })?;
    let failed = pg_failed(column);
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(column).map_err(failed)?,
        Type::INT4 => row
            .try_get::<_, Option<i32>>(column)
            .map_err(failed)?
            .map(i64::from),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(column)
            .map_err(failed)?
            .map(i64::from),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(column)
            .map_err(failed)?
            .map(i64::from),
        other => {
            return Err(DbError::Column {
                column,
                why: format!("{other} is not an integer (cast it AS BIGINT in the SQL)"),
            })
        }
    })
}

fn null(column: usize) -> DbError {
    DbError::Column {
        column,
        why: "is NULL".into(),
    }
}

impl FromColumn for Option<i64> {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        pg_int(row, column)
    }
}
impl FromColumn for i64 {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        pg_int(row, column)?.ok_or_else(|| null(column))
    }
}
impl FromColumn for Option<u64> {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        pg_int(row, column)?
            .map(|value| {
                u64::try_from(value).map_err(|_| DbError::Column {
                    column,
                    why: format!("{value} is negative"),
                })
            })
            .transpose()
    }
}
impl FromColumn for u64 {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        Option::<u64>::from_postgres(row, column)?.ok_or_else(|| null(column))
    }
}
impl FromColumn for bool {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        Ok(pg_int(row, column)?.ok_or_else(|| null(column))? != 0)
    }
}
macro_rules! narrow_int {
    ($($int:ty),*) => {$(
        impl FromColumn for $int {
            fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
                row.get(column)
            }
            fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
                let value = i64::from_postgres(row, column)?;
                <$int>::try_from(value).map_err(|_| DbError::Column {
                    column,
                    why: format!("{value} does not fit {}", stringify!($int)),
                })
            }
        }
    )*};
}
narrow_int!(i32, u32);

impl FromColumn for Option<String> {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        row.try_get(column).map_err(pg_failed(column))
    }
}
impl FromColumn for String {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        Option::<String>::from_postgres(row, column)?.ok_or_else(|| null(column))
    }
}
impl FromColumn for Vec<u8> {
    fn from_sqlite(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Self> {
        row.get(column)
    }
    fn from_postgres(row: &postgres::Row, column: usize) -> DbResult<Self> {
        row.try_get::<_, Option<Vec<u8>>>(column)
            .map_err(pg_failed(column))?
            .ok_or_else(|| null(column))
    }
}

/// `?N` to `$N`, outside quoted text.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for character in sql.chars() {
        match character {
            '\'' => {
                quoted = !quoted;
                out.push(character);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(character),
        }
    }
    out
}

/// One column of rows as a PostgreSQL array (`insert_rows`), typed by its values.
#[derive(Debug)]
enum PgColumn<'a> {
    Int(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<&'a str>>),
    Blob(Vec<Option<&'a [u8]>>),
}

impl<'a> PgColumn<'a> {
    fn of(values: impl Iterator<Item = Value<'a>> + Clone) -> Self {
        let kind = values.clone().find(|value| !matches!(value, Value::Null));
        match kind {
            Some(Value::Int(_)) => Self::Int(
                values
                    .map(|value| match value {
                        Value::Int(value) => Some(value),
                        _ => None,
                    })
                    .collect(),
            ),
            Some(Value::Real(_)) => Self::Real(
                values
                    .map(|value| match value {
                        Value::Real(value) => Some(value),
                        _ => None,
                    })
                    .collect(),
            ),
            Some(Value::Blob(_)) => Self::Blob(
                values
                    .map(|value| match value {
                        Value::Blob(value) => Some(value),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Self::Text(
                values
                    .map(|value| match value {
                        Value::Text(value) => Some(value),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Self::Int(_) => "bigint[]",
            Self::Real(_) => "float8[]",
            Self::Text(_) => "text[]",
            Self::Blob(_) => "bytea[]",
        }
    }
}

impl ToSql for PgColumn<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Int(values) => values.to_sql(ty, out),
            Self::Real(values) => values.to_sql(ty, out),
            Self::Text(values) => values.to_sql(ty, out),
            Self::Blob(values) => values.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), postgres::types::Kind::Array(_))
    }

    postgres::types::to_sql_checked!();
}

struct Postgres {
    /// Always Some until dropped (see `Drop`).
    client: Option<postgres::Client>,
    /// Prepared once per connection, by the SQL as the store wrote it.
    statements: HashMap<&'static str, postgres::Statement>,
    /// The same for statements built at run time (`insert_rows`' shapes).
    built: HashMap<String, postgres::Statement>,
}

impl Drop for Postgres {
    /// The blocking client closes its connection by running a runtime of its own, which
    /// tokio forbids on a thread that drives async tasks (a serving registry drops its
    /// stores there when it stops): it closes on a thread of its own then.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("postgres-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

impl Postgres {
    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a connection is open until dropped")
    }

    fn built_statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(statement) = self.built.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client().prepare(sql)?;
        self.built.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn statement(&mut self, sql: &'static str) -> DbResult<postgres::Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client().prepare(&numbered_placeholders(sql))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

enum Connection {
    Sqlite(rusqlite::Connection),
    /// Boxed: a PostgreSQL client is several times an SQLite handle's size.
    Postgres(Box<RefCell<Postgres>>),
}

/// A connection to either engine. Its SQL is `&'static str`: every statement is cached.
pub struct Db {
    connection: Connection,
}

fn values_of<'a>(params: &'a [&'a dyn ToValue]) -> Vec<Value<'a>> {
    params.iter().map(|param| param.value()).collect()
}

fn as_pg<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect()
}

impl Db {
    pub fn sqlite(connection: rusqlite::Connection) -> Self {
        // More distinct statements than rusqlite's default 16: evicting one means
        // compiling it again on the next batch.
        connection.set_prepared_statement_cache_capacity(128);
        Self {
            connection: Connection::Sqlite(connection),
        }
    }

    pub fn postgres(client: postgres::Client) -> Self {
        Self {
            connection: Connection::Postgres(Box::new(RefCell::new(Postgres {
                client: Some(client),
                statements: HashMap::new(),
                built: HashMap::new(),
            }))),
        }
    }

    /// Whether the connection is gone for good (PostgreSQL restarted or failed over):
    /// every statement on it would fail, and only a new connection helps.
    pub fn is_lost(&self) -> bool {
        match &self.connection {
            Connection::Sqlite(_) => false,
            Connection::Postgres(postgres) => postgres
                .try_borrow_mut()
                .is_ok_and(|mut postgres| postgres.client().is_closed()),
        }
    }

    pub fn engine(&self) -> Engine {
        match self.connection {
            Connection::Sqlite(_) => Engine::Sqlite,
            Connection::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, checkpoints).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.connection {
            Connection::Sqlite(connection) => Some(connection),
            Connection::Postgres(_) => None,
        }
    }

    /// Several statements without parameters (schemas, settings).
    pub fn batch(&self, sql: &str) -> DbResult<()> {
        match &self.connection {
            Connection::Sqlite(connection) => connection.execute_batch(sql)?,
            Connection::Postgres(postgres) => postgres.borrow_mut().client().batch_execute(sql)?,
        }
        Ok(())
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &'static str, params: &[&dyn ToValue]) -> DbResult<u64> {
        match &self.connection {
            Connection::Sqlite(connection) => {
                let values = values_of(params);
                let changed = connection
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(changed as u64)
            }
            Connection::Postgres(postgres) => {
                let mut postgres = postgres.borrow_mut();
                let statement = postgres.statement(sql)?;
                let values = values_of(params);
                Ok(postgres.client().execute(&statement, &as_pg(&values))?)
            }
        }
    }

    /// Every row, each through `map`.
    pub fn query<T>(
        &self,
        sql: &'static str,
        params: &[&dyn ToValue],
        mut map: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let mut out = Vec::new();
        self.for_each(sql, params, |row| {
            out.push(map(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Each row in turn, without holding them all, until `each` answers false.
    pub fn for_each(
        &self,
        sql: &'static str,
        params: &[&dyn ToValue],
        mut each: impl FnMut(&Row<'_>) -> DbResult<bool>,
    ) -> DbResult<()> {
        let values = values_of(params);
        match &self.connection {
            Connection::Sqlite(connection) => {
                let mut statement = connection.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(values.iter()))?;
                while let Some(row) = rows.next()? {
                    if !each(&Row::Sqlite(row))? {
                        break;
                    }
                }
            }
            Connection::Postgres(postgres) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut postgres = postgres.borrow_mut();
                let statement = postgres.statement(sql)?;
                let mut rows = postgres.client().query_raw(&statement, values.iter())?;
                while let Some(row) = rows.next()? {
                    if !each(&Row::Postgres(&row))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The first row, if any.
    pub fn query_opt<T>(
        &self,
        sql: &'static str,
        params: &[&dyn ToValue],
        mut map: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let mut first = None;
        self.for_each(sql, params, |row| {
            first = Some(map(row)?);
            Ok(false)
        })?;
        Ok(first)
    }

    /// Inserts `rows` (each the values of `insert`'s columns) and returns the `returning`
    /// column of each row inserted. `insert` is `INSERT INTO t (a, b)`, `tail` what
    /// follows the values (`ON CONFLICT DO NOTHING RETURNING a`). PostgreSQL gets a few
    /// hundred rows per statement, a round trip each; SQLite one cached statement per
    /// row, which costs no round trip in-process.
    pub fn insert_rows(
        &self,
        insert: &str,
        tail: &str,
        rows: &[Vec<Value<'_>>],
    ) -> DbResult<Vec<i64>> {
        let Some(columns) = rows.first().map(Vec::len) else {
            return Ok(Vec::new());
        };
        let returns = tail.contains("RETURNING");
        let mut out = Vec::new();
        match &self.connection {
            Connection::Sqlite(connection) => {
                let placeholders = (1..=columns)
                    .map(|n| format!("?{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("{insert} VALUES ({placeholders}) {tail}");
                let mut statement = connection.prepare_cached(&sql)?;
                for row in rows {
                    let params = rusqlite::params_from_iter(row.iter());
                    if returns {
                        let mut found = statement.query(params)?;
                        while let Some(returned) = found.next()? {
                            out.push(returned.get(0)?);
                        }
                    } else {
                        statement.execute(params)?;
                    }
                }
            }
            Connection::Postgres(postgres) => {
                // One array per column, unnested: one prepared statement per shape, a
                // round trip for all the rows (a VALUES list of thousands of parameters
                // cost PostgreSQL more to plan than to insert).
                let arrays: Vec<PgColumn<'_>> = (0..columns)
                    .map(|column| PgColumn::of(rows.iter().map(|row| row[column])))
                    .collect();
                let unnest = arrays
                    .iter()
                    .enumerate()
                    .map(|(index, array)| format!("${}::{}", index + 1, array.sql_type()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("{insert} SELECT * FROM UNNEST({unnest}) {tail}");
                let mut postgres = postgres.borrow_mut();
                let statement = postgres.built_statement(&sql)?;
                let params: Vec<&(dyn ToSql + Sync)> = arrays
                    .iter()
                    .map(|array| array as &(dyn ToSql + Sync))
                    .collect();
                let client = postgres.client();
                if returns {
                    for returned in client.query(&statement, &params)? {
                        out.push(pg_int(&returned, 0)?.ok_or_else(|| null(0))?);
                    }
                } else {
                    client.execute(&statement, &params)?;
                }
            }
        }
        Ok(out)
    }

    /// The first row, which must exist.
    pub fn query_one<T>(
        &self,
        sql: &'static str,
        params: &[&dyn ToValue],
        map: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        self.query_opt(sql, params, map)?.ok_or(DbError::NoRow)
    }

    /// The first column of the first row, which must exist.
    pub fn value<T: FromColumn>(&self, sql: &'static str, params: &[&dyn ToValue]) -> DbResult<T> {
        self.query_one(sql, params, |row| row.get(0))
    }

    /// A transaction that writes: SQLite takes its one write lock now (`BEGIN
    /// IMMEDIATE`), PostgreSQL locks rows as they are touched (and see
    /// [`Db::lock_agent`]). Rolled back when dropped uncommitted.
    pub fn transaction(&self) -> DbResult<Transaction<'_>> {
        self.batch(match self.engine() {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        })?;
        Ok(Transaction { db: self })
    }

    /// Serialises, across every registry process on this database, the transactions that
    /// store one agent's batches (its sequence and chain, a key rotation): a PostgreSQL
    /// advisory lock held to the end of the transaction. SQLite's write lock already
    /// serialises every writer. Inside a transaction only.
    pub fn lock_agent(&self, agent: &str) -> DbResult<()> {
        self.advisory_lock(agent)
    }

    /// The same for a month audit, which writes findings for any number of colleges.
    pub fn lock_national(&self) -> DbResult<()> {
        self.advisory_lock("kasip:national")
    }

    fn advisory_lock(&self, key: &str) -> DbResult<()> {
        if self.engine() == Engine::Postgres {
            self.query_one(
                "SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))",
                params![key],
                |_| Ok(()),
            )?;
        }
        Ok(())
    }
}

pub struct Transaction<'a> {
    db: &'a Db,
}

impl Transaction<'_> {
    pub fn commit(self) -> DbResult<()> {
        let result = self.db.batch("COMMIT");
        std::mem::forget(self);
        result
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.db.batch("ROLLBACK") {
            tracing::warn!(%error, "rollback failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_quoted_text_only() {
        assert_eq!(
            numbered_placeholders("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12"
        );
    }

    #[test]
    fn a_dropped_transaction_changes_nothing_and_a_committed_one_stays() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().expect("db"));
        db.batch("CREATE TABLE t (x INTEGER)").expect("table");
        {
            let transaction = db.transaction().expect("begin");
            transaction
                .execute("INSERT INTO t VALUES (?1)", params![1_i64])
                .expect("insert");
        }
        assert_eq!(
            db.value::<i64>("SELECT COUNT(*) FROM t", params![])
                .expect("count"),
            0
        );
        let transaction = db.transaction().expect("begin");
        transaction
            .execute("INSERT INTO t VALUES (?1)", params![2_i64])
            .expect("insert");
        transaction.commit().expect("commit");
        assert_eq!(
            db.value::<i64>("SELECT SUM(x) FROM t", params![])
                .expect("sum"),
            2
        );
    }
}
