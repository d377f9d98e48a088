//! SQL text: a byte tokenizer (`lexer`) and the classification of statements found in the
//! binlog (`statement`), shared by the binlog reader, the DDL applier and the schema copy.

pub mod lexer;
pub mod statement;
