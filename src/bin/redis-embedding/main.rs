//! `redis-embedding`: the operator's tool for embedding tables kept in Redis by this library
//! or by TFRA. It reads the same JSON config as the op library and needs no TensorFlow.
//!
//! Each command is one file: its arguments and `run`, over `redis_embedding::admin`. Read
//! commands print a table, or JSON with `--json`; long ones draw a progress bar on stderr when
//! it is a terminal. Errors are one line on stderr and exit code 1; `check` exits 2 when it
//! finds something.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use redis_embedding::admin::{Admin, Filter};
use redis_embedding::{Config, Error, DEFAULT_CONFIG_ENV};

mod check;
mod copy;
mod drop;
mod export;
mod import;
mod ls;
mod stats;
mod transfer;
mod ui;

#[derive(Parser)]
#[command(
    name = "redis-embedding",
    version,
    about = "See, move and check embedding tables kept in Redis"
)]
struct Cli {
    /// The JSON config (TFRA's schema) of the deployment.
    #[arg(long, global = true, env = DEFAULT_CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON instead of a table (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Which tables a command is about.
#[derive(clap::Args, Clone, Default)]
struct Select {
    /// Only tables of this model tag.
    #[arg(long)]
    model_tag: Option<String>,
    /// Only tables with this embedding name.
    #[arg(long)]
    table: Option<String>,
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            model_tag: self.model_tag.clone(),
            table: self.table.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Model tags and tables: buckets, rows, memory, TTL and layout.
    Ls(ls::Args),
    /// Server figures (memory, evictions, hits, ops/s, replication lag) and rows per table.
    Stats(stats::Args),
    /// Write tables to TFRA's `-keys`/`-values` files.
    Export(export::Args),
    /// Load tables from TFRA's `-keys`/`-values` files.
    Import(import::Args),
    /// Copy tables to another deployment, model tag or layout.
    Copy(copy::Args),
    /// Delete a table or a whole model tag.
    Drop(drop::Args),
    /// Read every row and report inconsistencies (exit code 2 when there are any).
    Check(check::Args),
}

/// What a command asks of `main`.
pub struct Ctx {
    config: Option<PathBuf>,
    json: bool,
}

impl Ctx {
    /// The config named by `--config` or the environment.
    fn config(&self) -> Result<Config, Error> {
        let path = self.config.clone().ok_or_else(|| {
            Error::invalid(format!(
                "no config: pass --config FILE or set {DEFAULT_CONFIG_ENV}"
            ))
        })?;
        Config::from_file(&path)
    }

    /// Connects to the configured deployment.
    fn admin(&self) -> Result<Admin, Error> {
        Admin::open(self.config()?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        config: cli.config,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Stats(a) => stats::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Import(a) => import::run(&ctx, a),
        Command::Copy(a) => copy::run(&ctx, a),
        Command::Drop(a) => drop::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            eprintln!("redis-embedding: error: {line}");
            ExitCode::from(1)
        }
    }
}
