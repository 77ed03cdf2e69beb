//! The library behind the `kosmos2` command-line tool: argument parsing, input discovery,
//! sharding, JSON Lines output with resume, annotated images, and the task runner.
//!
//! The binary (`src/main.rs`) only parses the command line and reports errors; every piece is
//! here so that it can be tested on its own.

pub mod app;
pub mod bboxes;
pub mod cli;
pub mod debug;
pub mod draw;
pub mod engine;
pub mod font;
pub mod hub_cache;
pub mod hub_download;
pub mod inputs;
pub mod jsonl;
pub mod record;
pub mod run;
pub mod serve;
