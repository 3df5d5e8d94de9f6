//! The read-only check for SQL: decided on the parsed statement, never on the text. The
//! statement-level rules live in `firehose-sql-guard` (small, so it can be fuzzed); this adds
//! DataFusion's own statements, which its parser handles before `sqlparser` sees them.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::{Error, Result};

/// Parses `sql` and accepts it only when it is one read-only statement: a query (`SELECT`,
/// `WITH ... SELECT`, `VALUES`, set operations) or `EXPLAIN [ANALYZE]` of one. Refused with
/// the reason: DDL, DML, `COPY`, `CREATE EXTERNAL TABLE`, `SET`, several statements, a
/// data-modifying statement nested in a query (a CTE that writes), table functions other
/// than `generate_series` and `range` (nothing may read files outside the dataset), and
/// expressions nested deeper than [`firehose_sql_guard::MAX_NESTING`] (checked before
/// parsing, so no tree too deep to walk is ever built).
///
/// ```
/// use firehose_query::check_read_only;
/// assert!(check_read_only("SELECT count(*) FROM posts WHERE text LIKE '%;DROP%'").is_ok());
/// assert!(check_read_only("DROP TABLE posts").is_err());
/// assert!(check_read_only("SELECT 1; DELETE FROM posts").is_err());
/// ```
pub fn check_read_only(sql: &str) -> Result<DfStatement> {
    firehose_sql_guard::check_nesting(sql).map_err(|e| Error::refused(e.reason))?;
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
        DfStatement::Statement(s) => {
            firehose_sql_guard::check_statement(s).map_err(|e| Error::refused(e.reason))
        }
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
            "WITH t AS (SELECT did FROM likes) SELECT count(*) FROM t",
            "EXPLAIN SELECT * FROM posts WHERE day = '20'",
            "EXPLAIN ANALYZE SELECT count(*) FROM events",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            check_read_only(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// DataFusion's own statements, and what the guard refuses, through DataFusion's parser.
    #[test]
    fn writes_and_escapes_are_refused() {
        assert!(refused("DROP TABLE posts").contains("DROP TABLE"));
        assert!(refused("INSERT INTO posts VALUES (1)").contains("INSERT INTO"));
        assert!(
            refused("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'")
                .contains("CREATE EXTERNAL TABLE")
        );
        assert!(refused("COPY posts TO '/tmp/x.parquet'").contains("COPY"));
        assert!(refused("COPY (SELECT 1) TO '/tmp/x.csv'").contains("COPY"));
        assert!(refused("RESET datafusion.execution.batch_size").contains("RESET"));
        assert!(refused("SET datafusion.execution.batch_size = 1").contains("SET"));
        assert!(refused("SELECT 1; DROP TABLE posts").contains("one statement"));
        assert!(refused("EXPLAIN DELETE FROM posts").contains("DELETE"));
        assert!(refused("EXPLAIN COPY posts TO '/tmp/x'").contains("COPY"));
        assert!(refused("SELECT * FROM read_parquet('/etc/passwd')").contains("read_parquet"));
        assert!(
            check_read_only("WITH x AS (INSERT INTO posts SELECT * FROM posts) SELECT 1").is_err()
        );
        let chain = format!("SELECT {}1", "1+".repeat(30_000));
        assert!(refused(&chain).contains("nests too deeply"));
    }
}
