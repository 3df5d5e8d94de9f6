//! The read-only check for the SQL users send: decided on the parsed statement, never on the
//! text.
//!
//! The query facade (`firehose-query`) runs SQL from the command line and from the HTTP API.
//! That SQL may only read the dataset: no DDL, no DML, no `COPY`, no settings, no table
//! functions that read files. A key design decision made in this crate is that **the check
//! walks the statement DataFusion will plan**, as parsed by `sqlparser` (the same version
//! DataFusion uses, so the types are the very ones), instead of matching keywords in the text,
//! which string literals, comments and quoting defeat.
//!
//! It is a crate of its own, depending only on `sqlparser`, so that it can be fuzzed
//! (`fuzz/fuzz_targets/sql_guard.rs`) without building DataFusion with coverage
//! instrumentation.
//!
//! # Layout
//!
//! - [`check_statement`] accepts one parsed statement when it is read-only: a query (`SELECT`,
//!   `WITH ... SELECT`, `VALUES`, set operations) or `EXPLAIN` of one, with no statement nested
//!   in it that is not a query (a CTE that writes) and no table function other than
//!   [`ALLOWED_TABLE_FUNCTIONS`].
//! - [`check_nesting`] refuses text whose expressions could nest deeper than
//!   [`MAX_NESTING`], from its tokens, before a parser builds a tree too deep to walk.
//! - [`parse_read_only`] does both: checks the nesting, parses text with `sqlparser`'s generic
//!   dialect (as DataFusion does for everything but its own extensions) and checks the one
//!   statement it must hold.
//!
//! ```
//! use firehose_sql_guard::parse_read_only;
//! assert!(parse_read_only("SELECT count(*) FROM posts WHERE text LIKE '%;DROP%'").is_ok());
//! assert!(parse_read_only("DROP TABLE posts").is_err());
//! assert!(parse_read_only("SELECT 1; DELETE FROM posts").is_err());
//! assert!(parse_read_only("SELECT * FROM read_csv('/etc/passwd')").is_err());
//! ```
#![deny(missing_docs)]

use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Re-exported so callers name the same types the guard checks.
pub use sqlparser;

/// How deeply a statement's expressions may nest, as bounded from its tokens before it is
/// parsed ([`check_nesting`]).
///
/// A flat chain of operators (`1+1+1+…`, `a OR b OR …`, `… UNION ALL SELECT …`) parses
/// without recursion into a tree as deep as the chain is long, and then everything that walks
/// the tree recursively (dropping it, DataFusion's planner and optimizer) runs out of stack: a
/// 60 KB statement of `1+` crashed `firehose serve` with a stack overflow. 500 is far beyond
/// what a query written by a person or a tool needs (long lists belong in `IN (…)`, which is
/// flat), and far within what the query runtime's thread stacks take.
pub const MAX_NESTING: usize = 500;

/// Table functions a query may call: they compute rows, they read nothing.
pub const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Why a statement is refused, for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// The reason.
    pub reason: String,
}

impl Refused {
    fn new(reason: impl Into<String>) -> Self {
        Refused {
            reason: reason.into(),
        }
    }
}

/// `Result` with [`Refused`].
pub type Result<T, E = Refused> = std::result::Result<T, E>;

/// Refuses `sql` when its expressions could nest deeper than [`MAX_NESTING`], before anything
/// parses it into a tree. Call it first: once a too-deep tree is built, even dropping it can
/// overflow the stack.
///
/// The bound is read from the tokens, without recursion: on every path through the brackets,
/// the brackets plus the operators and keywords at each level (each could add one level to
/// the tree). It over-counts (a keyword is not always an operator), never under-counts.
///
/// ```
/// use firehose_sql_guard::check_nesting;
/// assert!(check_nesting("SELECT did FROM posts WHERE lang IN ('en', 'de', 'fr')").is_ok());
/// let chain = format!("SELECT {}1", "1+".repeat(30_000));
/// assert!(check_nesting(&chain).unwrap_err().reason.contains("nests too deeply"));
/// ```
pub fn check_nesting(sql: &str) -> Result<()> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Refused::new(format!("cannot parse the SQL: {e}")))?;
    // Operators and keywords at each open bracket level, and their sum.
    let mut levels: Vec<usize> = vec![0];
    let mut on_path = 0usize;
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => levels.push(0),
            Token::RParen | Token::RBracket | Token::RBrace => {
                if levels.len() > 1
                    && let Some(n) = levels.pop()
                {
                    on_path -= n;
                }
            }
            token if adds_a_level(token) => {
                if let Some(n) = levels.last_mut() {
                    *n += 1;
                }
                on_path += 1;
            }
            _ => {}
        }
        if on_path + levels.len() - 1 > MAX_NESTING {
            return Err(Refused::new(format!(
                "the SQL nests too deeply (more than {MAX_NESTING} operators and brackets on one \
                 path); simplify it, e.g. with IN (...) instead of a long chain of OR"
            )));
        }
    }
    Ok(())
}

/// Whether `token` may add a level to the tree: anything but names, literals, commas and
/// spaces.
fn adds_a_level(token: &Token) -> bool {
    match token {
        Token::Word(word) => word.keyword != Keyword::NoKeyword && word.quote_style.is_none(),
        Token::EOF
        | Token::Number(..)
        | Token::Comma
        | Token::Whitespace(_)
        | Token::SemiColon
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => false,
        _ => true,
    }
}

/// Parses `sql` with the generic dialect and accepts it only when it is one statement that
/// [`check_statement`] accepts (after [`check_nesting`]); returns that statement.
pub fn parse_read_only(sql: &str) -> Result<Statement> {
    check_nesting(sql)?;
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Refused::new(format!("cannot parse the SQL: {e}")))?;
    let statement = match (statements.pop(), statements.len()) {
        (None, _) => return Err(Refused::new("no SQL statement given")),
        (Some(s), 0) => s,
        (Some(_), more) => {
            return Err(Refused::new(format!(
                "one statement at a time, got {}",
                more + 1
            )));
        }
    };
    check_statement(&statement)?;
    Ok(statement)
}

/// Accepts `statement` when it is read-only: a query, or `EXPLAIN [ANALYZE]` of one, with no
/// nested statement that is not a query and no table function other than
/// [`ALLOWED_TABLE_FUNCTIONS`]. Refused with the reason otherwise.
pub fn check_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Query(_) => {}
        Statement::Explain { statement, .. } => return check_statement(statement),
        other => {
            return Err(Refused::new(format!(
                "only SELECT, WITH and EXPLAIN are allowed, not {}",
                leading_keywords(other)
            )));
        }
    }
    match statement.visit(&mut ReadOnly) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(reason) => Err(Refused::new(reason)),
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
        match parse_read_only(sql) {
            Err(Refused { reason }) => reason,
            Ok(statement) => panic!("{sql}: expected a refusal, got {statement}"),
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
            parse_read_only(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
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
        assert!(refused("COPY posts TO '/tmp/x.csv'").contains("COPY"));
        assert!(refused("SET datafusion.execution.batch_size = 1").contains("SET"));
        assert!(refused("SELECT 1; DROP TABLE posts").contains("one statement"));
        assert!(refused("SELECT 1;; SELECT 2").contains("one statement"));
        assert!(refused("EXPLAIN DELETE FROM posts").contains("DELETE"));
        assert!(refused("SELECT * FROM read_csv('/etc/passwd')").contains("read_csv"));
        assert!(refused("SELECT * FROM read_parquet('/etc/passwd')").contains("read_parquet"));
        assert!(refused("").contains("no SQL"));
        assert!(refused("SELEC 1").contains("parse"));
    }

    #[test]
    fn a_cte_that_writes_is_refused() {
        let sql = "WITH gone AS (DELETE FROM posts RETURNING *) SELECT * FROM gone";
        // Whether the parser accepts the form or not, it must not pass.
        assert!(parse_read_only(sql).is_err());
        let sql = "WITH x AS (INSERT INTO posts SELECT * FROM posts) SELECT 1";
        assert!(parse_read_only(sql).is_err());
    }

    /// Deeply nested input neither overflows the stack nor passes; below the nesting bound,
    /// the parser's own recursion limit (50) refuses it.
    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(refused(&sql).contains("nests too deeply"));
        let sql = format!("SELECT {}", "NOT ".repeat(5000));
        assert!(refused(&sql).contains("nests too deeply"));
        let sql = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(refused(&sql).contains("parse"), "{}", refused(&sql));
    }

    /// A long flat chain of operators (which parses into a deep tree without nesting) is
    /// refused from its tokens, before it is parsed; one at the limit is parsed, checked and
    /// dropped within an ordinary thread stack.
    #[test]
    fn long_operator_chains_are_refused_before_parsing() {
        for chain in ["1+", "1 OR ", "1::BIGINT+", "x IS NULL AND "] {
            let sql = format!("SELECT {}1", chain.repeat(30_000));
            assert!(refused(&sql).contains("nests too deeply"), "{chain}");
        }
        let sql = format!("SELECT {}1", "1 UNION ALL SELECT ".repeat(400));
        assert!(refused(&sql).contains("nests too deeply"));
        // SELECT counts one.
        let sql = format!("SELECT {}1", "1+".repeat(MAX_NESTING - 1));
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse_read_only(&sql).map(|_| ()))
            .unwrap()
            .join();
        assert!(
            matches!(result, Ok(Ok(()))),
            "at the limit: accepted, no overflow"
        );
        // Brackets count too, and a long flat list does not.
        let sql = format!(
            "SELECT {}1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(refused(&sql).contains("nests too deeply"));
        let list: Vec<String> = (0..20_000).map(|i| format!("'did:plc:{i}'")).collect();
        let sql = format!("SELECT * FROM posts WHERE did IN ({})", list.join(", "));
        assert!(parse_read_only(&sql).is_ok());
    }
}
