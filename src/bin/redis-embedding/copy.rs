//! `copy`: tables to another deployment, model tag or layout; resumable and verified.

use std::path::PathBuf;
use std::process::ExitCode;

use redis_embedding::admin::CopyOptions;
use redis_embedding::{Config, Error};

use crate::transfer::{summary, ShapeArgs};
use crate::{ui, Ctx, Select};

/// Arguments of `copy`.
#[derive(clap::Args)]
pub struct Args {
    /// The destination's config (default: the source's, with --to-model-tag).
    #[arg(long, value_name = "CONFIG")]
    to: Option<PathBuf>,
    /// The destination model tag (default: each table's own).
    #[arg(long, value_name = "TAG")]
    to_model_tag: Option<String>,
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Continue the interrupted copy recorded in the state file.
    #[arg(long)]
    resume: bool,
    /// The state file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "redis-embedding-copy.state"
    )]
    state: PathBuf,
    /// Rows read per HSCAN page and written per insert.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    page_rows: usize,
    /// Rows per table compared byte for byte after the copy.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    sample: usize,
}

/// Copies the selected tables.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let to = match &a.to {
        Some(path) => Config::from_file(path)?,
        None => admin.config().clone(),
    };
    let o = CopyOptions {
        filter: a.select.filter(),
        to_model_tag: a.to_model_tag,
        shape: a.shape.hint(),
        resume: a.resume,
        state: a.state,
        page_rows: a.page_rows,
        sample: a.sample,
    };
    let moved = admin.copy(&to, &o, &ui::Bars::new())?;
    summary(ctx, "copied", &moved);
    Ok(ExitCode::SUCCESS)
}
