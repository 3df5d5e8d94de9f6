//! Feeds arbitrary text to the SQL guard (`firehose-sql-guard`), the read-only check in front
//! of every query the CLI and the HTTP API run.
//!
//! The guard must never panic or overflow the stack, whatever it is given. What it accepts
//! must be read-only, checked here independently of the guard's own walk: the statement is a
//! query or an `EXPLAIN` of one; every statement nested anywhere in it (sqlparser's
//! `visit_statements`) is a query; every table-valued function it names is an allowed one;
//! and printing it and parsing the text again gives a statement the guard accepts too (so no
//! round trip through text turns it into something that writes).
#![no_main]

use std::ops::ControlFlow;

use firehose_sql_guard::sqlparser::ast::{
    Statement, TableFactor, visit_relations, visit_statements,
};
use firehose_sql_guard::sqlparser::dialect::GenericDialect;
use firehose_sql_guard::sqlparser::parser::Parser;
use firehose_sql_guard::{ALLOWED_TABLE_FUNCTIONS, check_statement, parse_read_only};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(statement) = parse_read_only(sql) else {
        return;
    };
    assert_read_only(&statement, sql);
    let printed = statement.to_string();
    if let Ok(again) = Parser::parse_sql(&GenericDialect {}, &printed) {
        if let [again] = again.as_slice() {
            if let Err(refused) = check_statement(again) {
                panic!("accepted {sql:?}, but refused its printed form {printed:?}: {refused}");
            }
            assert_read_only(again, &printed);
        }
    }
});

fn assert_read_only(statement: &Statement, sql: &str) {
    let mut top = statement;
    while let Statement::Explain { statement, .. } = top {
        top = statement;
    }
    assert!(
        matches!(top, Statement::Query(_)),
        "accepted a statement that is not a query: {sql:?}"
    );
    let _ = visit_statements(statement, |nested| {
        assert!(
            matches!(nested, Statement::Query(_) | Statement::Explain { .. }),
            "accepted {sql:?}, which holds the statement {nested}"
        );
        ControlFlow::<()>::Continue(())
    });
    // Table functions in FROM: only the allowed ones, and no `TABLE(expr)` at all.
    struct Factors<'a>(&'a str);
    impl firehose_sql_guard::sqlparser::ast::Visitor for Factors<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let name = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => Some(name.to_string().to_ascii_lowercase()),
                TableFactor::TableFunction { .. } => {
                    panic!("accepted a TABLE(...) function in {:?}", self.0)
                }
                _ => None,
            };
            if let Some(name) = name {
                assert!(
                    ALLOWED_TABLE_FUNCTIONS.contains(&name.as_str()),
                    "accepted the table function {name} in {:?}",
                    self.0
                );
            }
            ControlFlow::Continue(())
        }
    }
    use firehose_sql_guard::sqlparser::ast::Visit;
    let _ = statement.visit(&mut Factors(sql));
    // Relations are plain names (the dataset's tables), never paths: the guard leaves that to
    // DataFusion, which has no such table; this only checks the walk reaches them.
    let _ = visit_relations(statement, |_| ControlFlow::<()>::Continue(()));
}
