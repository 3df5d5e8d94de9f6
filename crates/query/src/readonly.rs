//! The read-only check for SQL: decided on the parsed statement, never on the text.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, Statement, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::{Error, Result};

/// Table functions a query may call: they compute rows, they read nothing.
const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Parses `sql` and accepts it only when it is one read-only statement: a query (`SELECT`,
/// `WITH ... SELECT`, `VALUES`, set operations) or `EXPLAIN [ANALYZE]` of one. Refused with
/// the reason: DDL, DML, `COPY`, `CREATE EXTERNAL TABLE`, `SET`, several statements, a
/// data-modifying statement nested in a query (a CTE that writes), and table functions other
/// than `generate_series` and `range` (nothing may read files outside the dataset).
///
/// ```
/// use firehose_query::check_read_only;
/// assert!(check_read_only("SELECT count(*) FROM posts WHERE text LIKE '%;DROP%'").is_ok());
/// assert!(check_read_only("DROP TABLE posts").is_err());
/// assert!(check_read_only("SELECT 1; DELETE FROM posts").is_err());
/// ```
pub fn check_read_only(sql: &str) -> Result<DfStatement> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| Error::refused(format!("cannot parse the SQL: {e}")))?;
    let statement = match (statements.pop_front(), statements.len()) {
        (None, _) => return Err(Error::refused("no SQL statement given")),
        (Some(s), 0) => s,
        (Some(_), more) => {
            return Err(Error::refused(format!(
                "one statement at a time, got {}",
                more + 1
            )));
        }
    };
    check_df_statement(&statement)?;
    Ok(statement)
}

fn check_df_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => check_statement(s),
        DfStatement::Explain(explain) => check_df_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => Err(Error::refused(
            "CREATE EXTERNAL TABLE is not allowed: only the dataset's tables can be read",
        )),
        DfStatement::CopyTo(_) => Err(Error::refused("COPY is not allowed: queries are read-only")),
        DfStatement::Reset(_) => Err(Error::refused(
            "RESET is not allowed: queries cannot change settings",
        )),
    }
}

fn check_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Query(_) => {}
        Statement::Explain { statement, .. } => return check_statement(statement),
        other => {
            return Err(Error::refused(format!(
                "only SELECT, WITH and EXPLAIN are allowed, not {}",
                leading_keywords(other)
            )));
        }
    }
    let mut visitor = ReadOnly;
    match statement.visit(&mut visitor) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(reason) => Err(Error::refused(reason)),
    }
}

/// The statement's first keywords, for the message (`INSERT INTO`, `CREATE TABLE`).
fn leading_keywords(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect();
    if words.is_empty() {
        "this statement".to_owned()
    } else {
        words.join(" ").to_ascii_uppercase()
    }
}

/// Walks a query: every nested statement must be a query, and table functions must be
/// allowed ones.
struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        match statement {
            Statement::Query(_) => ControlFlow::Continue(()),
            other => ControlFlow::Break(format!(
                "a query may not contain {}: queries are read-only",
                leading_keywords(other)
            )),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => allowed_function(name),
            TableFactor::TableFunction { expr, .. } => ControlFlow::Break(format!(
                "table function {expr} is not allowed: only generate_series and range"
            )),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn allowed_function(name: &ObjectName) -> ControlFlow<String> {
    let plain = name.to_string().to_ascii_lowercase();
    if ALLOWED_TABLE_FUNCTIONS.contains(&plain.as_str()) {
        ControlFlow::Continue(())
    } else {
        ControlFlow::Break(format!(
            "table function {name} is not allowed: only generate_series and range"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match check_read_only(sql) {
            Err(Error::Refused { reason }) => reason,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select did, count(*) from posts group by did order by 2 desc limit 10",
            "WITH t AS (SELECT did FROM likes) SELECT count(*) FROM t",
            "EXPLAIN SELECT * FROM posts WHERE day = '20'",
            "EXPLAIN ANALYZE SELECT count(*) FROM events",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT 'DROP TABLE posts; --' AS text",
            "VALUES (1), (2)",
            "SELECT 1 UNION ALL SELECT 2",
        ] {
            check_read_only(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn writes_and_escapes_are_refused() {
        assert!(refused("DROP TABLE posts").contains("DROP TABLE"));
        assert!(refused("INSERT INTO posts VALUES (1)").contains("INSERT INTO"));
        assert!(refused("DELETE FROM posts").contains("DELETE FROM"));
        assert!(refused("UPDATE posts SET text = 'x'").contains("UPDATE"));
        assert!(refused("CREATE TABLE t AS SELECT 1").contains("CREATE TABLE"));
        assert!(refused("CREATE VIEW v AS SELECT 1").contains("CREATE VIEW"));
        assert!(
            refused("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'")
                .contains("CREATE EXTERNAL TABLE")
        );
        assert!(refused("COPY posts TO '/tmp/x.parquet'").contains("COPY"));
        assert!(refused("COPY (SELECT 1) TO '/tmp/x.csv'").contains("COPY"));
        assert!(refused("SET datafusion.execution.batch_size = 1").contains("SET"));
        assert!(refused("SELECT 1; DROP TABLE posts").contains("one statement"));
        assert!(refused("SELECT 1;; SELECT 2").contains("one statement"));
        assert!(refused("EXPLAIN DELETE FROM posts").contains("DELETE"));
        assert!(refused("EXPLAIN COPY posts TO '/tmp/x'").contains("COPY"));
        assert!(refused("SELECT * FROM read_csv('/etc/passwd')").contains("read_csv"));
        assert!(refused("SELECT * FROM read_parquet('/etc/passwd')").contains("read_parquet"));
        assert!(refused("").contains("no SQL"));
        assert!(refused("SELEC 1").contains("parse"));
    }

    #[test]
    fn a_cte_that_writes_is_refused() {
        let sql = "WITH gone AS (DELETE FROM posts RETURNING *) SELECT * FROM gone";
        // Whether the parser accepts the form or not, it must not pass.
        assert!(check_read_only(sql).is_err());
        let sql = "WITH x AS (INSERT INTO posts SELECT * FROM posts) SELECT 1";
        assert!(check_read_only(sql).is_err());
    }
}
