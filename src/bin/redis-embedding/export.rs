//! `export`: tables to TFRA's `-keys`/`-values` files, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use redis_embedding::admin::ExportOptions;
use redis_embedding::Error;

use crate::transfer::{summary, ShapeArgs};
use crate::{ui, Ctx, Select};

/// Arguments of `export`.
#[derive(clap::Args)]
pub struct Args {
    /// The output directory: table `<tag>:<name>` goes to `DIR/<tag>/<name>-keys` and
    /// `-values`, the files `load_from_file_system` reads.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Finish an interrupted export into DIR (its state file is DIR/redis-embedding-export.state).
    #[arg(long)]
    resume: bool,
    /// Rows read per HSCAN page.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    page_rows: usize,
}

/// Exports the selected tables.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let o = ExportOptions {
        dir: a.dir,
        filter: a.select.filter(),
        shape: a.shape.hint(),
        resume: a.resume,
        page_rows: a.page_rows,
    };
    let moved = admin.export(&o, &ui::Bars::new())?;
    summary(ctx, "exported", &moved);
    Ok(ExitCode::SUCCESS)
}
