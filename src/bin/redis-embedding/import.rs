//! `import`: TFRA's `-keys`/`-values` files into tables, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use redis_embedding::admin::ImportOptions;
use redis_embedding::Error;

use crate::transfer::{summary, ShapeArgs};
use crate::{ui, Ctx, Select};

/// Arguments of `import`.
#[derive(clap::Args)]
pub struct Args {
    /// A directory written by `export` (`DIR/<tag>/<name>-keys`) or by `save_to_file_system`
    /// (`DIR/<file>-keys`: model tag from the config, table name `<file>` up to `_mht_`).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Only these files (by the model tag and table they belong to).
    #[command(flatten)]
    select: Select,
    /// Import into this model tag instead.
    #[arg(long, value_name = "TAG")]
    to_model_tag: Option<String>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Continue the interrupted import recorded in the state file.
    #[arg(long)]
    resume: bool,
    /// The state file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "redis-embedding-import.state"
    )]
    state: PathBuf,
    /// Rows per insert.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    batch_rows: usize,
}

/// Imports the files.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let cfg = ctx.config()?;
    let o = ImportOptions {
        dir: a.dir,
        filter: a.select.filter(),
        to_model_tag: a.to_model_tag,
        shape: a.shape.hint(),
        resume: a.resume,
        state: a.state,
        batch_rows: a.batch_rows,
    };
    let moved = redis_embedding::admin::import(&cfg, &o, &ui::Bars::new())?;
    summary(ctx, "imported", &moved);
    Ok(ExitCode::SUCCESS)
}
